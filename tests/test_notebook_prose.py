"""The tutorial notebooks' prose holds in every profile's copy (reads the .ipynb JSON, executes nothing).

The committed copies in ``notebooks/`` carry the ``smoke`` profile's outputs; Snakemake executes the
same notebooks on the ``default`` profile into ``results/default/notebooks/``, the chapters of the
documentation site. A sentence in a markdown cell is therefore read beside both profiles' numbers:
these tests guard claims that were once true of one profile only, or of neither.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path, kind: str) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == kind]


def prose(path: Path) -> str:
    """All markdown of the notebook, whitespace collapsed (sentences wrap across lines)."""
    return re.sub(r"\s+", " ", "\n".join(_cells(path, "markdown")))


def code(path: Path) -> str:
    return "\n".join(_cells(path, "code"))


def notebook(prefix: str) -> Path:
    (path,) = [p for p in CHAPTERS if p.name.startswith(prefix)]
    return path


def test_the_chapters_are_there():
    assert len(CHAPTERS) >= 9


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_banner_says_the_outputs_are_smokes(path):
    """The executed default copy holds the default profile's outputs: no cell may say they are smoke's."""
    text = prose(path)
    assert not re.search(r"outputs (saved|stored) in this notebook come from the `?smoke`? profile", text, re.I)
    assert not re.search(r"committed outputs come from the `?smoke`? profile", text, re.I)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_electronic_network_is_a_reference_not_a_bound(path):
    """DKO + fine-tune can beat the electronic network (stage 1 stops on a plateau rule)."""
    text = prose(path)
    for claim in (r"best any hybrid", r"upper bound", r"ceiling", r"at best approach", r"no optics: the bound"):
        assert not re.search(claim, text, re.I), f"{path.name}: '{claim}'"


def test_02_stage1_runs_at_a_constant_rate():
    text = prose(notebook("02_"))
    assert not re.search(r"step decay|learning[- ]rate decay", text, re.I)
    assert "constant learning rate" in text
    # the motorcycle sentence must not promise how close the network comes to the constant predictor
    assert not re.search(r"not expected to beat the constant predictor there by much", text)


def test_03_prints_matching_error_and_correlation_pairs():
    """Each error column of dko/summary.csv is shown on one line with the correlation of the same kernels."""
    src = code(notebook("03_"))
    lines = src.splitlines()
    for err, corr in (("element_norm_err_mean", "element_corr_mean"),
                      ("channel_norm_err_elem_mean", "channel_corr_elem_mean"),
                      ("channel_norm_err_mean", "channel_corr_mean")):
        assert any(f'"{err}"' in line and f'"{corr}"' in line for line in lines), (err, corr)
    # the printed fidelity line must not put the per-metasurface-gain error beside the per-channel-gain correlation
    assert 'channels["corr"]' not in src and "channels['corr']" not in src
    assert "what stage 2 fits" in prose(notebook("03_"))


def test_05_takes_its_methods_from_the_config():
    path = notebook("05_")
    assert "e2e_warm" not in prose(path)
    assert '"e2e_warm"' not in code(path)
    assert "cfg.budget.methods" in code(path)


def test_06_names_the_noisy_column_and_no_fixed_budget_axes():
    text = prose(notebook("06_"))
    assert "`full_psf_noise`" in text
    assert not re.search(r"`full_psf` column is the result that matters", text)
    assert not re.search(r"accuracy against wall-clock and FLOP budgets", text)


def test_07_computes_which_design_degrades_least():
    path = notebook("07_")
    names = r"`?\*{0,2}(dko\w*|e2e\w*|electronic|ideal_optics)\*{0,2}`?"
    assert not re.search(names + r" degrades least", prose(path))
    src = code(path)
    assert "degradation(table)" in src and "degrades least" in src
    assert 'groupby("design")["delta"].mean()' in src  # the README's summary, so that the two agree
