#!/usr/bin/env python
"""Regenerate the README's generated sections (claims table, results) from ``results/``.

    python scripts/render_readme_results.py --profile default \
        --out results/default/readme_results.md --readme README.md

Writes the claims table (``dkolib.study.readme_claims``) and the results section to
``--out`` and, with ``--readme``, splices them between the README's
``<!-- claims:start -->`` / ``<!-- claims:end -->`` markers (after the quick start) and its
``<!-- results:start -->`` / ``<!-- results:end -->`` markers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.io import atomic_path  # noqa: E402
from dkolib.study.readme_claims import claims_table, splice_claims  # noqa: E402
from dkolib.study.readme_results import render, splice  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--readme", type=Path, default=None)
    args = ap.parse_args(argv)
    claims, section = claims_table(args.profile), render(args.profile)
    with atomic_path(args.out) as tmp:
        tmp.write_text(claims + "\n" + section)
    if args.readme is not None:
        text = splice_claims(splice(args.readme.read_text(), section), claims)
        with atomic_path(args.readme) as tmp:
            tmp.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
