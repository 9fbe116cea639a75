"""Where every artefact of the pipeline lives (one source of truth for paths).

Layout, relative to the project root (:func:`dkolib.root.project_root`: the working
directory or the nearest parent with ``config/``, or ``$DKOLIB_ROOT``)::

    cache/data/<profile>/{train,val,test}.npz   generated data (not committed)
    results/<profile>/...                        tables, checkpoints, executed notebooks
    results/<profile>/benchmarks/*.tsv, run.json Snakemake's per-job benchmarks, the last run's times
    results/benchmarks/*.csv                     speed measurements (machine-specific)
    figures/<profile>/*.png|pdf                  figures
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..root import project_root


@dataclass(frozen=True)
class ProfilePaths:
    """All paths of one profile's run. ``root`` defaults to the repository root."""

    profile: str
    root: Path = field(default_factory=project_root)

    @property
    def data_cache(self) -> Path:
        return self.root / "cache" / "data" / self.profile

    @property
    def results(self) -> Path:
        return self.root / "results" / self.profile

    @property
    def figures(self) -> Path:
        return self.root / "figures" / self.profile

    @property
    def benchmarks(self) -> Path:
        return self.root / "results" / "benchmarks"

    @property
    def stage1(self) -> Path:
        return self.results / "stage1"

    @property
    def dko(self) -> Path:
        return self.results / "dko"

    @property
    def dko_finetune(self) -> Path:
        return self.results / "dko_finetune"

    @property
    def dko_finetune_psf(self) -> Path:
        """DKO fine-tuned on sensor images rendered with the whole PSF (not the k x k crop)."""
        return self.results / "dko_finetune_psf"

    @property
    def dko_finetune_noise(self) -> Path:
        """DKO back end fine-tuned on full-PSF sensor images with sensor noise."""
        return self.results / "dko_finetune_noise"

    @property
    def e2e(self) -> Path:
        return self.results / "e2e"

    @property
    def equal_budget(self) -> Path:
        return self.results / "equal_budget"

    @property
    def notebooks(self) -> Path:
        return self.results / "notebooks"
