"""DKO stage 2's stopping rule (``stop_window = N``, ``stop_tol``), checked against the rule as stated.

:func:`dkolib.dko.synthesis.synthesize` stops after step ``t > N`` once
``(L[t-N] - L[t]) / |L[t-N]| < stop_tol`` (``L``: the summed loss of the history). The
expected stop step is recomputed here from each run's own ``history["loss"]``, independently
of the implementation, on the fast 33-cell problem of ``tests/test_synthesis.py``.
"""

from __future__ import annotations

import pytest
import torch

from dkolib.config import load_config
from dkolib.dko.synthesis import synthesize
from dkolib.io import load_torch

torch.set_num_threads(1)

LR = 0.5
N = 3
TOL = 0.035
"""The rule of the run that stops: on this trajectory it fires at step 16, where the loss has
improved by 3.2 % over 3 steps (4 % and more before); over N - 1 = 2 steps it would already hold
at step 12."""
CAP = 40


def _tiny_problem():
    """``tests/test_synthesis.py::_tiny_problem``: a 33-cell aperture focused 1 mm away."""
    from dkolib.optics.metaatoms import IdealPhaseAtom
    from dkolib.optics.metasurface import MetasurfaceArray

    cfg = load_config("smoke", {"optics.n_cells": 33, "optics.meta_atom": "ideal", "optics.subpixel": 1,
                                "optics.render_window_px": 15, "optics.sensor_distance_m": 1e-3})
    w = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(3))

    def make_array():
        return MetasurfaceArray(1, 3, cfg.optics, IdealPhaseAtom(), init="lens")

    return cfg, w, make_array


def _run(steps, stop_window=N, stop_tol=TOL, lr=LR, **kw):
    cfg, w, make_array = _tiny_problem()
    return synthesize(w, cfg.optics, cfg.dko, array=make_array(), steps=steps, lr=lr, progress=False,
                      stop_window=stop_window, stop_tol=stop_tol, **kw)


def _improvement(losses, t, n):
    """Relative improvement of the loss over the ``n`` steps up to step ``t`` (1-based)."""
    prev, now = losses[t - n - 1], losses[t - 1]
    return (prev - now) / abs(prev)


def _first_stop(losses, n, tol):
    """The first step ``t > n`` at which the rule holds, or None: the rule as stated, by hand."""
    return next((t for t in range(n + 1, len(losses) + 1) if _improvement(losses, t, n) < tol), None)


@pytest.fixture(scope="module")
def stopped():
    """The uninterrupted run with the rule active (N = 3, tol = 0.035, cap 40)."""
    return _run(CAP)


def test_a_run_still_improving_by_more_than_the_tolerance_runs_to_its_cap():
    tol = 0.02  # every 3-step improvement of the first 14 steps is 3.9 % or more
    res = _run(14, stop_tol=tol)
    losses = res.history["loss"].tolist()
    assert all(_improvement(losses, t, N) >= 1.5 * tol for t in range(N + 1, 15))  # the premise, with margin
    assert res.steps == 14 and not res.stopped_early
    assert res.history["step"].tolist() == list(range(1, 15))


def test_the_run_stops_at_the_first_step_where_the_rule_holds(stopped):
    losses = stopped.history["loss"].tolist()
    t = _first_stop(losses, N, TOL)
    assert t is not None and N < t < CAP
    assert stopped.stopped_early and stopped.steps == t == len(losses) == 16
    assert stopped.history["step"].tolist() == list(range(1, t + 1))
    # the trajectory tells the rule's details apart: over N - 1 steps it would have held earlier
    assert _first_stop(losses, N - 1, TOL) < t
    assert _improvement(losses, t, N) < TOL <= min(_improvement(losses, s, N) for s in range(N + 1, t))


def test_an_unchanged_loss_does_not_stop_a_run_at_zero_tolerance():
    # lr = 0: the loss is the same at every step, so its improvement is exactly 0, which is not < 0
    res = _run(6, stop_window=2, stop_tol=0.0, lr=0.0)
    losses = res.history["loss"].tolist()
    assert len(set(losses)) == 1
    assert res.steps == 6 and not res.stopped_early
    # ... while any positive tolerance stops it as soon as the rule can be evaluated (step N + 1)
    res = _run(6, stop_window=2, stop_tol=1e-12, lr=0.0)
    assert res.stopped_early and res.steps == 3


class _Crash(RuntimeError):
    pass


def _crashing_psf(at_call: int):
    """The default PSF function, raising on its ``at_call``-th call (one call per step)."""
    from dkolib.optics.propagation import psf

    calls = {"n": 0}

    def fn(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise _Crash(f"simulated crash in call {at_call}")
        return psf(*args, **kwargs)

    return fn


def test_a_run_interrupted_before_its_stop_resumes_to_the_same_stop(stopped, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(_Crash):  # crashes in step 16; the last checkpoint is step 14
        _run(CAP, ckpt_path=ckpt, ckpt_every=7, psf_fn=_crashing_psf(16))
    # the stop's window (the loss at steps 13 and 16) spans the resume: the rule needs the history
    # from before it, and fewer than N steps are run after it
    assert load_torch(ckpt)["step"] == 14 and stopped.steps == 16
    resumed = _run(CAP, ckpt_path=ckpt, ckpt_every=7)
    assert resumed.stopped_early and resumed.steps == stopped.steps
    assert resumed.history["loss"].tolist() == stopped.history["loss"].tolist()
    assert torch.equal(resumed.array.latent, stopped.array.latent)
    # the checkpoint belongs to this rule: another tolerance or window does not resume from it
    with pytest.raises(ValueError, match="different synthesis run"):
        _run(CAP, ckpt_path=ckpt, stop_tol=2 * TOL)
    with pytest.raises(ValueError, match="different synthesis run"):
        _run(CAP, ckpt_path=ckpt, stop_window=N + 1)


def test_a_run_that_stopped_stays_stopped_when_resumed_with_a_higher_cap(stopped, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    first = _run(stopped.steps, ckpt_path=ckpt)  # cap = the stop step: the rule fires at the last step
    assert first.stopped_early and first.steps == stopped.steps
    again = _run(CAP, ckpt_path=ckpt)  # nothing left to do: the stop is kept, not run past
    assert again.stopped_early and again.steps == stopped.steps
    assert again.history["loss"].tolist() == stopped.history["loss"].tolist()
    assert torch.equal(again.array.latent, stopped.array.latent)
