#!/usr/bin/env bash
# The paper's sizes on one GPU, in under 5 minutes: PSFs per second of the fast engine (forward,
# forward + backward), seconds per DKO stage-2 step and per E2E step for all 384 metasurfaces of
# 1025 x 1025 cells, and the peak GPU memory of each (scripts/gpu_check.py says how).
#
# Install first, from the project root: a CUDA build of torch (https://pytorch.org, e.g.
# `pip install torch --index-url https://download.pytorch.org/whl/cu124`), then `pip install -e .`.
# Run: scripts/gpu_check.sh [more gpu_check.py options]. Rows land in $OUT/gpu_check.csv (a relative
# $OUT is taken from the project root; default results/benchmarks/gpu_check.csv) and replace the
# extrapolated paper rows of results/costs.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 290 python scripts/gpu_check.py --profile paper --device cuda --out "${OUT:-results/benchmarks}/gpu_check.csv" "$@"
