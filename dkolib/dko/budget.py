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
    simulation from ``dkolib.optics.propagation.count_psf_flops``.

FLOPs are also kept per category (``flops_by``) so reports can split network
and optics cost. :meth:`state_dict` / :meth:`load_state_dict` let a resumed run
continue its budget.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

from torch.utils.flop_counter import FlopCounterMode


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
