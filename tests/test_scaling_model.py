"""The E2E scaling model (dkolib.distributed.scaling) against sums worked by hand."""

import pandas as pd
import pytest

from dkolib.distributed.scaling import StepCosts, costs_from_table, scaling_table, step_model

# 6 metasurfaces, 12 s of PSFs and 3 s of network on one device, batch 4, 100 parameters;
# a slow link (1000 B/s, 10 ms per hop) so that communication shows in the sums
C = StepCosts(psf_s=12.0, net_s=3.0, n_elements=6, batch=4, n_params=100, window_px=7)
LINK = {"bandwidth_Bps": 1e3, "latency_s": 0.01}


def test_one_device_is_the_measured_step():
    for strategy in ("replicated", "data_parallel"):
        m = step_model(C, 1, strategy, **LINK)
        assert m["step_s"] == 15.0 and m["comm_s"] == 0.0 and m["speedup"] == 1.0


def test_replicated_network_by_hand():
    # W = 4: ceil(6 / 4) = 2 metasurfaces each -> 12 * 2 / 6 = 4 s; 3 blocks of 2 x 49 float32 sent = 1176 B
    # -> 1.176 s + 2 * 3 hops * 0.01 s = 1.236 s; the network stays 3 s
    m = step_model(C, 4, "replicated", **LINK)
    assert m["psf_s"] == pytest.approx(4.0) and m["net_s"] == 3.0
    assert m["psf_gather_bytes"] == 1176 and m["grad_allreduce_bytes"] == 0.0
    assert m["comm_s"] == pytest.approx(1.236)
    assert m["step_s"] == pytest.approx(8.236) and m["speedup"] == pytest.approx(15 / 8.236)


def test_data_parallel_network_by_hand():
    # the batch of 4 over 4 devices: 1 sample each -> 0.75 s; all-reduce of 100 parameters and 6 x 49 PSF
    # values: 2 * 3/4 * 394 * 4 B = 2364 B -> 2.364 s + 0.06 s; with the PSF gather as above:
    # 4 + 0.75 + 1.236 + 2.424 = 8.41 s
    m = step_model(C, 4, "data_parallel", **LINK)
    assert m["net_s"] == pytest.approx(0.75) and m["grad_allreduce_bytes"] == pytest.approx(2364.0)
    assert m["step_s"] == pytest.approx(8.41) and m["collectives"] == 2
    # one synchronised BatchNorm of 2 channels: 3, 2, 3, 2 floats -> 1.5 * 10 * 4 B = 60 B and 4 x 0.06 s latency
    bn = step_model(StepCosts(**{**C.__dict__, "bn_channels": (2,)}), 4, "data_parallel", **LINK)
    assert bn["bn_allreduce_bytes"] == pytest.approx(60.0) and bn["collectives"] == 6
    assert bn["step_s"] == pytest.approx(8.41 + 0.06 + 4 * 0.06)
    # more devices than samples: the network cannot drop below one sample's time
    assert step_model(C, 8, "data_parallel", **LINK)["net_s"] == pytest.approx(0.75)


def test_replication_caps_the_speedup_at_amdahls_bound():
    # with free communication the replicated speed-up tends to (psf + net) / net = 5, never above
    free = {"bandwidth_Bps": 1e30, "latency_s": 0.0}
    s = [step_model(C, w, "replicated", **free)["speedup"] for w in (1, 2, 3, 6, 60)]
    assert s == sorted(s) and s[-1] == pytest.approx(15 / (12 / 6 + 3)) and max(s) < 5.0


def test_table_reads_the_costs_csv_and_rejects_a_missing_size():
    costs = pd.DataFrame([
        {"method": "e2e_step", "size": "paper", "seconds_psf": 26.0, "seconds_net": 8.4, "n_elements": 384,
         "batch": 12, "n_params": 417769236, "device": "cpu"},
        {"method": "stage1_step", "size": "paper", "seconds_psf": 0.0, "seconds_net": 10.4, "n_elements": 0,
         "batch": 12, "n_params": 14329236, "device": "cpu"}])
    c = costs_from_table(costs, "paper")
    assert (c.psf_s, c.net_s, c.n_elements, c.batch, c.n_params) == (26.0, 8.4, 384, 12, 14329236)
    t = scaling_table(c, (1, 8, 64), steps=50_000)
    one = t[(t["strategy"] == "replicated") & (t["devices"] == 1)].iloc[0]
    assert one["run_hours"] == pytest.approx(34.4 * 50_000 / 3600)
    with pytest.raises(KeyError, match="no e2e_step row for size 'default'"):
        costs_from_table(costs, "default")


def test_readme_section_states_the_replication_cap_from_the_table(tmp_path):
    from dkolib.study.readme_bench import e2e_scaling_section

    t = scaling_table(C, (1, 2, 6), steps=100, bandwidth_Bps=1e30, latency_s=0.0)
    (tmp_path / "results" / "benchmarks").mkdir(parents=True)
    t.to_csv(tmp_path / "results" / "benchmarks" / "e2e_scaling_model.csv", index=False)
    text = e2e_scaling_section(tmp_path)
    # cap (12 + 3) / 3 = 5x; on 6 devices: 15 / (2 + 3) = 3x
    assert "caps the speed-up at 5x" in text and "3x on 6 devices" in text
    assert e2e_scaling_section(tmp_path / "nowhere") == ""
