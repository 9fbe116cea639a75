"""Equal-budget figures: budgets in multiples of C_ref with absolute units on top, reference lines,
readable ticks, the time-to-accuracy figure, and byte-reproducible PDF / PNG files."""

import itertools
import os
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from dkolib.plots import save_figure
from dkolib.study import figures, stats
from dkolib.study.protocol import METRICS

LADDER = (0.25, 0.5, 1.0, 2.0, 4.0)
C_FLOPS, C_S = 1.2e12, 40.0


def _runs():
    rows = []
    for method, scale in (("electronic", 1.0), ("dko", 1.1), ("e2e_scratch", 3.0)):
        for seed in range(3):
            for f in LADDER:
                for axis in ("flops", "wall"):
                    row = {m: 0.5 for m in METRICS}
                    row.update({"method": method, "engine": "fast", "seed": seed, "eval": "crop",
                                "budget_axis": axis, "budget_fraction": f, "budget_flops": f * C_FLOPS,
                                "budget_s": f * C_S, "abs_rel": scale * (0.2 + 0.1 / f) + 0.01 * seed})
                    rows.append(row)
    return pd.DataFrame(rows)


def _labels(axis):
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def _overlaps(boxes):
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


def test_budget_axis_in_multiples_of_c_ref_with_absolute_units_on_top():
    fig = figures.plot_accuracy_vs_budget(_runs(), x="budget_flops",
                                          reference_lines={"constant predictor": 0.525, "electronic (stage 1)": 0.163})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert _labels(ax.xaxis) == ["0.25x", "0.5x", "1x", "2x", "4x"]
    top = ax.child_axes  # the secondary (top) axis
    assert _labels(top[0].xaxis) == ["3.0e11", "6.0e11", "1.2e12", "2.4e12", "4.8e12"]  # f x C_ref in FLOPs
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for axis in (ax.xaxis, top[0].xaxis):
        boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_text()]
        assert len(boxes) == 5 and not _overlaps(boxes)
    # the top axis's labels stay below the panel title
    title = ax.title.get_window_extent(renderer)
    assert not _overlaps([title] + [t.get_window_extent(renderer) for t in top[0].xaxis.get_ticklabels()])
    plt.close(fig)

    fig = figures.plot_accuracy_vs_budget(_runs(), x="budget_s")
    top = fig.axes[0].child_axes
    assert _labels(top[0].xaxis) == ["10", "20", "40", "80", "160"]  # wall seconds
    plt.close(fig)


def test_reference_lines_are_drawn_and_labelled():
    lines = {"constant predictor": 0.525, "electronic (stage 1)": 0.163}
    fig = figures.plot_accuracy_vs_budget(_runs(), x="budget_flops", reference_lines=lines)
    flat = {ln.get_label(): ln.get_ydata() for ln in fig.axes[0].get_lines()}
    assert list(flat["constant predictor (0.525)"]) == [0.525, 0.525]
    assert list(flat["electronic (stage 1) (0.163)"]) == [0.163, 0.163]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "constant predictor (0.525)" in legend
    plt.close(fig)
    fig = figures.plot_accuracy_vs_budget(_runs(), x="budget_flops")  # none given: none drawn
    assert not [ln for ln in fig.axes[0].get_lines() if "predictor" in ln.get_label()]
    plt.close(fig)


def test_time_to_accuracy_figure_marks_never_and_intervals(tmp_path):
    tta = stats.time_to_accuracy(_runs(), targets=(1.5, 1.1), metrics=("abs_rel",), n_boot=200)
    never = tta[(tta["method"] == "e2e_scratch") & (tta["axis"] == "flops")]
    assert never["budget_needed"].isna().all()  # 3x the electronic error never gets within 1.5x
    fig = figures.plot_time_to_accuracy(tta, metric="abs_rel", axis="flops", path=tmp_path / "tta")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("never ≤4x") == 2  # one per target ratio, for e2e_scratch only
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 2
    assert _labels(ax.xaxis) == ["electronic", "dko", "e2e_scratch"]
    assert set(_labels(ax.yaxis)) >= {"1x", "4x"} and all(t.endswith("x") for t in _labels(ax.yaxis))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert not _overlaps([t.get_window_extent(renderer) for t in ax.xaxis.get_ticklabels()])
    assert (tmp_path / "tta.png").exists() and (tmp_path / "tta.pdf").exists()
    plt.close(fig)
    with pytest.raises(ValueError, match="no time-to-accuracy rows"):
        figures.plot_time_to_accuracy(tta, metric="rmse")


def _simple_figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 3, 2], label="x")
    ax.legend()
    return fig


def test_saved_figures_are_byte_reproducible(tmp_path, monkeypatch):
    fig = _simple_figure()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")  # what matplotlib would stamp as the date
    save_figure(fig, tmp_path / "a")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 22 years later
    save_figure(fig, tmp_path / "b")
    for ext in (".png", ".pdf"):
        assert (tmp_path / f"a{ext}").read_bytes() == (tmp_path / f"b{ext}").read_bytes(), ext
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()
    # control: matplotlib's default PDF metadata does carry the date, so the comparison above can fail
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    fig.savefig(tmp_path / "c.pdf")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    fig.savefig(tmp_path / "d.pdf")
    assert (tmp_path / "c.pdf").read_bytes() != (tmp_path / "d.pdf").read_bytes()
    plt.close(fig)


def test_png_software_tag_names_no_date(tmp_path):
    from PIL import Image

    fig = _simple_figure()
    save_figure(fig, tmp_path / "a")
    info = Image.open(tmp_path / "a.png").info
    assert info.get("Software", "").startswith("Matplotlib version" + matplotlib.__version__)
    assert not any("date" in k.lower() or "time" in k.lower() for k in info)
    plt.close(fig)


def test_summarize_script_writes_time_to_accuracy_and_figures(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import summarize_equal_budget as script

    runs = _runs()
    inputs = []
    for method, g in runs.groupby("method"):
        inputs.append(tmp_path / "jobs" / f"{method}_fast_0.csv")
        inputs[-1].parent.mkdir(exist_ok=True)
        g.to_csv(inputs[-1], index=False)
    (tmp_path / "res" / "stage1").mkdir(parents=True)
    pd.DataFrame({"model": ["electronic", "constant"], "split": ["synthetic_test"] * 2,
                  "abs_rel": [0.163, 0.525]}).to_csv(tmp_path / "res" / "stage1" / "metrics.csv", index=False)
    script.main(["--inputs", *map(str, inputs), "--out", str(tmp_path / "res" / "eb.csv"),
                 "--summary", str(tmp_path / "res" / "summ.csv"), "--figures", str(tmp_path / "fig"),
                 "--n-boot", "50"])
    tta = pd.read_csv(tmp_path / "res" / "time_to_accuracy.csv")
    assert set(stats.TTA_COLUMNS) <= set(tta.columns)
    assert set(tta["method"]) == {"electronic", "dko", "e2e_scratch"}
    for name in ("equal_budget_flops", "equal_budget_wall", "time_to_accuracy"):
        assert (tmp_path / "fig" / f"{name}.pdf").exists(), name
    assert script.reference_lines(tmp_path / "res" / "stage1" / "metrics.csv", "abs_rel") == {
        "constant predictor": 0.525, "electronic (stage 1)": 0.163}
    assert script.reference_lines(tmp_path / "absent.csv", "abs_rel") is None
    assert "ratio_n_resamples" in pd.read_csv(tmp_path / "res" / "summ.csv").columns
    assert os.path.exists(tmp_path / "res" / "summ_catchup.csv")
