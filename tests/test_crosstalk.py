"""The crosstalk study's table and sentence, on budgets made by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from dkolib.study.crosstalk import crosstalk_sentence, crosstalk_table


def _budget(kernel, neighbours):
    # two metasurfaces per wavelength; fractions of each aperture's light
    return pd.DataFrame({"design": "dko", "gap_m": 0.0, "baffle_wall_m": 0.0, "element": [0, 1, 2, 3],
                         "wavelength_nm": [400.0, 400.0, 550.0, 550.0], "kernel": kernel,
                         "render_window": [k + 0.05 for k in kernel], "own_region": [k + 0.2 for k in kernel],
                         "neighbours": neighbours, "window": 0.9, "beyond_window": 0.05})


def _summary(corr, err):
    return pd.DataFrame({"channel_corr_elem_mean": [corr], "channel_norm_err_elem_mean": [err]})


def test_table_averages_each_weights_budget_and_keeps_its_fidelity():
    budgets = {2.0: _budget([0.1, 0.3, 0.2, 0.4], [0.2, 0.0, 0.1, 0.1]),
               0.5: _budget([0.0, 0.2, 0.1, 0.1], [0.3, 0.1, 0.2, 0.2])}
    table = crosstalk_table(budgets, {0.5: _summary(0.998, 0.07), 2.0: _summary(0.994, 0.105)})
    assert list(table["leakage_weight"]) == [0.5, 2.0]  # sorted by weight
    row = table.set_index("leakage_weight").loc[2.0]
    assert row["kernel"] == pytest.approx(0.25) and row["neighbours"] == pytest.approx(0.1)
    assert row["kernel_400nm"] == pytest.approx(0.2) and row["neighbours_550nm"] == pytest.approx(0.1)
    assert row["own_region"] == pytest.approx(0.45) and row["err_elem"] == pytest.approx(0.105)
    text = crosstalk_sentence(table)
    assert "From leakage weight 0.5 to 2 the light in the neighbours' regions goes from 0.2 to 0.1" in text
    assert "keeps light off the neighbours as well" in text
    more = table.assign(neighbours=[0.1, 0.2])
    assert "does not keep light off the neighbours" in crosstalk_sentence(more)
    assert "kernel error goes from 0.07 to 0.105" in text and "(in the kernel: 0.1 to 0.25;" in text
    assert crosstalk_sentence(table.iloc[:1]) == ""
