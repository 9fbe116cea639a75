"""Compute-budget accounting: wall seconds, CPU seconds and counted FLOPs.

The equal-budget protocol compares methods by what they spend. A
:class:`BudgetMeter` accumulates

* ``wall_s``: wall-clock seconds (``time.perf_counter``) spent inside
  :meth:`BudgetMeter.timing` blocks;
* ``cpu_s``: process CPU seconds (``time.process_time``, all threads) in the same blocks;
* ``flops``: counted floating-point operations (a multiply-add counts as 2),
  from two sources:

  - network steps, counted by ``torch.utils.flop_counter.FlopCounterMode`` the
    first time a step with a given key (e.g. the input shape and whether it is
    a training step) runs, then reused for every later step with that key
    (:meth:`BudgetMeter.counted`; or :meth:`measure_flops` on a dry run outside
    the timed block + :meth:`charge`, which keeps the counter's Python overhead
    -- seconds per step -- out of the wall-clock budget). A training step is counted forward + backward.
    FlopCounterMode counts matmuls/convolutions (the dominant cost); element-wise
    ops are not counted.
  - analytic counts added with :meth:`BudgetMeter.add_flops`, e.g. the PSF
    simulation (:func:`psf_simulation_flops`, from
    ``dkolib.optics.propagation.count_psf_flops``: FlopCounterMode does not see
    FFTs, and counts a complex matmul's multiply-add as 2 instead of 8 real FLOPs).

PSF simulation cost
-------------------
One simulation of ``E`` elements costs ``F = sum_e count_psf_flops(element e at its
wavelength)`` forward. Differentiating it costs ``(1 + BACKWARD_FACTOR + r) F`` with
``BACKWARD_FACTOR = 1``: the propagation operators (incident wave, transfer function,
window DFT matrices) are constants, so the backward pass needs the gradient with
respect to the input only -- one adjoint FFT per FFT, one matmul per matmul, one
product per product -- unlike a network layer, whose weight gradient doubles that
(the usual "backward = 2 x forward"). ``r = 1`` when the engine checkpoints its
activations and so runs the forward again inside backward (``psf()``'s default when
``E`` exceeds the chunk size, :func:`dkolib.optics.propagation.psf_backward_recomputes`),
else 0. Measured with FlopCounterMode and an FFT-counting dispatch mode in
``tests/test_flop_accounting.py``: the ratio is exactly 2 without and 3 with
checkpointing. Element-wise work outside the engine (latent -> radius -> meta-atom
transmission, ``O(N^2)`` per element) is not counted, like element-wise network ops.

FLOPs are also kept per category (``flops_by``) so reports can split network
and optics cost. :meth:`state_dict` / :meth:`load_state_dict` let a resumed run
continue its budget.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator, Sequence

from torch.utils.flop_counter import FlopCounterMode

BACKWARD_FACTOR = 1.0
"""Backward FLOPs of a PSF simulation as a multiple of its forward FLOPs (module docstring:
gradients with respect to the input only, as the propagation operators are constants)."""


def element_wavelengths_m(optics_cfg, n_elements: int) -> list[float]:
    """Per-element wavelengths ``[E]`` (metres) of a front-end array with one input channel per
    configured wavelength: element ``e = (o * C_in + i) * 2 + s`` sees ``wavelengths_m[i]``,
    ``C_in = len(optics_cfg.wavelengths_m)`` (as :class:`dkolib.optics.metasurface.MetasurfaceArray`)."""
    wls = tuple(float(w) for w in optics_cfg.wavelengths_m)
    if int(n_elements) < 0 or not wls:
        raise ValueError(f"need n_elements >= 0 and at least one wavelength, got {n_elements}, {wls}")
    return [wls[(e // 2) % len(wls)] for e in range(int(n_elements))]


def psf_simulation_flops(optics_cfg, wavelengths_m: Sequence[float], window_px: int, engine: str, *,
                         backward: bool, subpixel: int | None = None) -> float:
    """FLOPs of simulating the PSFs of ``E`` elements once (see "PSF simulation cost" above).

    Args:
        optics_cfg: :class:`dkolib.config.OpticsConfig` (geometry, ``n_cells``, ``subpixel``).
        wavelengths_m: ``[E]`` wavelength of each element (metres), e.g. an array's
            ``wavelengths_m`` buffer or :func:`element_wavelengths_m`.
        window_px: sensor window side ``W`` (pixels); engine: ``'fast'`` or ``'reference'``.
        backward: the simulation is differentiated (forward + backward, with the
            engine's recomputation when it checkpoints), else forward only.
        subpixel: samples per pixel per axis (default ``optics_cfg.subpixel``).
    Returns the real-FLOP count (float).
    """
    from ..optics.propagation import count_psf_flops, psf_backward_recomputes

    wls = [float(w) for w in (wavelengths_m.tolist() if hasattr(wavelengths_m, "tolist") else wavelengths_m)]
    sub = int(optics_cfg.subpixel if subpixel is None else subpixel)
    per_wl = {lam: count_psf_flops(optics_cfg.n_cells, window_px, sub, engine, optics_cfg=optics_cfg,
                                   wavelength_m=lam) for lam in set(wls)}
    forward = float(sum(per_wl[lam] for lam in wls))
    if not backward:
        return forward
    recompute = 1.0 if psf_backward_recomputes(len(wls), engine) else 0.0
    return forward * (1.0 + BACKWARD_FACTOR + recompute)


class BudgetMeter:
    """Accumulator of wall seconds, CPU seconds and FLOPs (see module docstring)."""

    def __init__(self) -> None:
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.flops = 0.0
        self.flops_by: dict[str, float] = {}
        self._flop_cache: dict[str, float] = {}
        self._depth = 0

    # ------------------------------------------------------------------ time
    @contextmanager
    def timing(self) -> Iterator["BudgetMeter"]:
        """Add the wall and CPU seconds spent in the ``with`` block (nesting counts once)."""
        self._depth += 1
        if self._depth > 1:
            try:
                yield self
            finally:
                self._depth -= 1
            return
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield self
        finally:
            self.wall_s += time.perf_counter() - w0
            self.cpu_s += time.process_time() - c0
            self._depth -= 1

    # ----------------------------------------------------------------- flops
    def add_flops(self, flops: float, category: str = "analytic") -> None:
        """Add an analytic FLOP count (must be finite and non-negative)."""
        flops = float(flops)
        if not flops >= 0.0 or flops == float("inf"):
            raise ValueError(f"FLOP count must be finite and non-negative, got {flops}")
        self.flops += flops
        self.flops_by[category] = self.flops_by.get(category, 0.0) + flops

    def counted(self, key: Hashable, fn: Callable[[], Any], category: str = "network") -> Any:
        """Run ``fn()`` and add its FLOPs; they are measured once per ``key`` and reused.

        ``fn`` should contain everything to be counted (for training: forward and
        ``loss.backward()``). Returns ``fn()``'s result.
        """
        k = repr(key)
        if k in self._flop_cache:
            out = fn()
        else:
            counter = FlopCounterMode(display=False)
            with counter:
                out = fn()
            self._flop_cache[k] = float(counter.get_total_flops())
        self.add_flops(self._flop_cache[k], category)
        return out

    def measure_flops(self, key: Hashable, fn: Callable[[], Any]) -> float:
        """Count ``fn()``'s FLOPs under FlopCounterMode and remember them for ``key``, WITHOUT
        charging them (for a dry run outside :meth:`timing`, so that the counter's own
        overhead is not billed as training time). Returns the count."""
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        self._flop_cache[repr(key)] = float(counter.get_total_flops())
        return self._flop_cache[repr(key)]

    def charge(self, key: Hashable, category: str = "network") -> float:
        """Add the FLOPs remembered for ``key`` (KeyError if never measured). Returns them."""
        k = repr(key)
        if k not in self._flop_cache:
            raise KeyError(f"no FLOP count measured for {key!r}; call measure_flops or counted first")
        self.add_flops(self._flop_cache[k], category)
        return self._flop_cache[k]

    def cached_flops(self, key: Hashable) -> float | None:
        """FLOPs measured for ``key`` (None if that key has not run yet)."""
        return self._flop_cache.get(repr(key))

    # ---------------------------------------------------------------- limits
    def budget_exceeded(self, max_seconds: float | None = None, max_flops: float | None = None) -> bool:
        """True once wall seconds reach ``max_seconds`` or FLOPs reach ``max_flops`` (None = no limit)."""
        if max_seconds is not None and self.wall_s >= max_seconds:
            return True
        if max_flops is not None and self.flops >= max_flops:
            return True
        return False

    def snapshot(self) -> dict[str, float]:
        """``{"wall_s", "cpu_s", "flops"}`` now."""
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "flops": self.flops}

    # ----------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "flops": self.flops,
                "flops_by": dict(self.flops_by), "flop_cache": dict(self._flop_cache)}

    def load_state_dict(self, state: dict) -> None:
        missing = {"wall_s", "cpu_s", "flops"} - set(state)
        if missing:
            raise KeyError(f"budget state is missing {sorted(missing)}")
        self.wall_s = float(state["wall_s"])
        self.cpu_s = float(state["cpu_s"])
        self.flops = float(state["flops"])
        self.flops_by = dict(state.get("flops_by", {}))
        self._flop_cache = dict(state.get("flop_cache", {}))

    def __repr__(self) -> str:
        return f"BudgetMeter(wall_s={self.wall_s:.2f}, cpu_s={self.cpu_s:.2f}, flops={self.flops:.3e})"
