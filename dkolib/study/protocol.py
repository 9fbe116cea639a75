"""The equal-budget experiment's protocol: DKO versus end-to-end (E2E) design at equal compute.

This module holds the protocol (stated below) as code: the methods and table columns, the
experiment's :class:`Settings` (from ``cfg.budget``), learning-rate reuse across seeds
(:func:`lr_source`), and the budget ladders and snapshot targets derived from a calibration
(costs in wall seconds / CPU seconds / FLOPs). The rest of the experiment lives beside it:
:mod:`~dkolib.study.snapshots` (one run, snapshotted at every budget; job folders),
:mod:`~dkolib.study.components` (models, DKO stage 2, fine-tune, calibration, evaluation),
:mod:`~dkolib.study.jobs` (the jobs), :mod:`~dkolib.study.stats` (merging and summary) and
:mod:`~dkolib.study.figures` (plots).

Protocol (revised once: the first version's budget unit was 5 % of a trained stage 1, so it
compared networks that had barely started to learn; the unit is now the main chain's DKO run)
----------------------------------------------------------------------------------------------
Methods
  * ``electronic``  -- the stage-1 network alone (no optics): the reference a hybrid is measured against
    (not a strict bound: stage 1 stops on its validation plateau, and a fine-tuned hybrid can beat it).
    Under sensor noise (``full_psf_noise``) it is read through ideal optics with the same noise
    (:func:`dkolib.dko.evaluation.ideal_optics_model`), so the noisy targets are ones a camera can reach.
  * ``dko``         -- stage 1, then stage 2 (metasurface synthesis, :func:`dkolib.dko.synthesis.synthesize`)
    and the closed-form gain of ``optics.gain``'s model (per metasurface or per output channel).
  * ``dko_ft``      -- ``dko`` plus a fixed-length fine-tune of the electronic back end with the
    optics frozen (``budget.finetune_steps`` steps, crop front end, depth loss).
  * ``e2e_scratch`` -- metasurfaces + network trained jointly from random init, the PSF engine
    simulating every metasurface in every step, crop-kernel front end (the paper's E2E);
    the gain is a trainable parameter initialised to the reference kernel norm (as ``train.run_e2e``).
  * ``e2e_warm``    -- the same, the network warm-started from the stage-1 network (the
    reference stage 1 of the same seed, ``N1`` steps); its meter starts
    at that stage 1's cost, so it has no point below it.

Budgets
  The reference cost ``C_ref(engine)`` is the cost of the main chain's DKO run: its stage 1
  trained to the validation plateau (``N1`` steps, ``stage1.plateau_patience``) plus its
  stage 2 to the stopping rule (``N2`` steps, ``dko.stop_window``), read from
  ``results/<profile>/{stage1/log.csv, dko/summary.csv}`` (:func:`main_chain_steps`; explicit
  ``budget.stage1_steps`` / ``budget.dko_steps`` override them). The first seed's stage 1 is
  the main chain's (the same run, bit for bit), so its 1x DKO point is the main chain's design
  where DKO's search keeps the base rate, and the ladder's multiples are multiples of a trained
  network. It is calibrated by the per-seed ``calibrate`` job, which times a few steps
  of each component on this machine with this job's thread count (median wall seconds per step;
  FLOPs are exact: network steps counted by ``FlopCounterMode`` through
  :func:`dkolib.dko.train.train_loop`, PSF simulations analytically). The ladder is
  ``budget.ladder_fractions x C_ref`` on the axes ``budget.axes``: ``flops`` (machine-independent,
  so a rerun reproduces every snapshot) and/or ``wall`` (seconds); a design is *snapshotted on
  one axis* (column ``budget_axis``) and both its nominal budgets and what it actually spent
  (``spent_s``, ``cpu_s``, ``spent_flops``) are logged, so a FLOP-axis design also reports the
  wall clock it took.
  Only training computation is charged (data loading, forward, backward, optimizer,
  optical simulation); evaluation, checkpoint I/O and learning-rate selection are not
  (they are identical for every method). Wall-clock budgets assume an unshared core per
  job: calibrating under a different load than the runs see shifts the wall ladder (the
  FLOP ladder is immune); ``cpu_s`` is logged beside ``spent_s`` to make that visible.

Truncation = snapshot
  All runs use a constant learning rate, so a run truncated at budget B is exactly the
  same run's state when its accumulated cost first reaches B (``train_loop``'s
  ``max_seconds``/``max_flops`` semantics: it stops *before* a step once the meter has
  reached the limit, so every method overshoots by less than one of its own steps).
  One run per (method, engine, seed, lr) therefore serves every budget: it is advanced by
  repeated resumed ``train_loop`` calls, each up to the next pending budget, and the
  model is saved whenever a budget is crossed (:func:`dkolib.study.snapshots.train_with_snapshots`).

Stage 1 spends its budget (``budget.stage1_stop``)
  With ``budget`` (the profiles' setting) every seed's stage 1 trains on at the main chain's
  constant rate to the largest budget a method needs of it, so each ``electronic`` and DKO point
  spends its budget as E2E does, and a budget above ``C_ref`` buys a longer-trained network. With
  ``plateau`` it stops at ``N1`` steps (the main chain's plateau): an ``electronic`` budget above
  the cost of ``N1`` steps (and a DKO budget whose stage-1 share is above it) reads the
  ``N1``-step network and spends less than its budget (the ``spent_*`` columns), which leaves
  DKO's and the electronic rows flat above 1x. A decayed schedule would train better per step
  (``scripts/stage1_convergence.py`` measures it), but it would need one run per budget:
  constant-rate snapshots are what let one run serve the whole ladder. The budget unit stays the
  main chain's plateau-stopped run either way.

DKO at budget B
  The DKO point at B uses the stage-1 snapshot at ``B - S2`` (``dko``) or
  ``B - S2 - FT`` (``dko_ft``) (with ``stage1_stop: plateau``: or at ``N1`` steps if that comes first), where ``S2`` and ``FT`` are the calibrated costs of
  stage 2 and of the fine-tune; stage 2 (and the fine-tune) is then run on it and its
  *measured* cost is added to the stage-1 snapshot's cost. Stage 2 stops by its rule, capped
  by ``dko.steps`` and by what the budget has left at the calibrated cost per step
  (:func:`dkolib.study.jobs.stage2_step_cap`), so no design spends more than its budget plus
  one step. A method that cannot fit a
  budget (``B <= S2`` for DKO, ``B <= S2 + FT`` for dko_ft, ``B <= S1`` for e2e_warm) has
  no point there: no row is written.

Learning rates
  Stage 1 trains at ``stage1.lr``, the main chain's rate (the run that defines the budget unit;
  the main chain itself is not searched either). Every other method searches the same
  multipliers ``budget.lr_grid`` of its own base rates, one multiplier scaling all the rates
  the method itself trains with: DKO (``dko.lr``), DKO-FT (``dko.lr`` and ``dko.finetune_lr``),
  E2E (``e2e.lr_net`` and ``e2e.lr_optics``). The multiplier is chosen on the VALIDATION split
  (crop evaluation, AbsRel) at the reference budget (fraction 1.0 on the FLOP axis, whose
  snapshots do not depend on the machine's speed, so the choice is reproducible; else on the
  first axis), and a multiplier must beat the base one (1) by more than ``budget.lr_tie_rel``
  (relative, about the seed-to-seed spread) to be chosen (:func:`pick_lr_mult`): a tie never
  decides a result. Only the chosen run is continued to larger budgets and reported, on the
  TEST split. With ``budget.lr_search: first_seed`` the search runs once per method, on the
  first of ``budget.seeds`` with the fast engine, and every other seed and the reference engine
  reuse that multiplier (:func:`lr_source`). With ``every_seed`` each job searches for itself.
  Selection cost is not charged to any budget.

Evaluation
  Every design at every budget: ``eval='crop'`` (idealised k x k kernel) and
  ``eval='full_psf'`` (sensor image rendered with the whole PSF window, the gain unchanged),
  plus ``'full_psf_noise'`` (sensor noise) when ``budget.noise_eval`` is true,
  all on the first ``budget.eval_items`` test images (:func:`dkolib.dko.evaluation.evaluate_design`).

Jobs (independent, single-threaded; see ``scripts/run_equal_budget.py``)
  ``calibrate`` per seed writes calibration and budgets into a shared folder, ``stage1``
  the stage-1 snapshots beside them (``e2e_scratch`` needs only the budgets); ``electronic | dko | dko_ft | e2e_scratch | e2e_warm`` per (engine, seed) read
  it and write one CSV each; ``scripts/summarize_equal_budget.py`` merges them
  (:func:`dkolib.study.stats.summarize`).

Budget-specific configuration keys read here (with fallbacks so the code runs before
they exist): ``budget.stage1_steps`` / ``budget.dko_steps`` (0 -> the main chain's counts),
``budget.finetune_steps`` (-> ``dko.finetune_steps``), ``budget.lr_tie_rel`` (-> 0),
``budget.eval_items`` (-> all), ``budget.axes`` (-> ``('wall', 'flops')``),
``budget.noise_eval`` (-> False), ``budget.calib_steps`` (-> 3), ``budget.stage1_stop`` (-> ``plateau``,
the behaviour before the key existed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Iterable

import pandas as pd

from ..dko.budget import BudgetMeter


METHODS = ("electronic", "dko", "dko_ft", "e2e_scratch", "e2e_warm")
SEED_JOBS = ("calibrate", "stage1")
"""The per-seed jobs that share one folder (``--stage1-dir``) and need no engine."""
JOBS = SEED_JOBS + METHODS
AXES = ("wall", "flops")
METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
REQUIRED_COLUMNS = ("method", "engine", "seed", "budget_s", "budget_flops") + METRICS + ("eval",)
EXTRA_COLUMNS = ("lr", "lr_mult", "budget_fraction", "budget_axis", "spent_s", "cpu_s", "spent_flops", "steps")
COLUMNS = REQUIRED_COLUMNS + EXTRA_COLUMNS
"""Column order of every per-job CSV and of ``equal_budget.csv``."""
STAGE1_STOPS = ("budget", "plateau")
"""``budget.stage1_stop``: stage 1 trains on to its largest budget, or stops at the main chain's plateau."""
REFERENCE_FRACTION = 1.0
REF_METHOD = "dko"
"""Denominator of the AbsRel ratio in the summary."""


class BudgetProtocolError(RuntimeError):
    """A job's inputs do not fit the protocol (missing stage 1, mismatched budgets, ...)."""


@dataclass(frozen=True)
class Settings:
    """The experiment's knobs, from ``cfg.budget`` (fallbacks in the module docstring)."""

    fractions: tuple
    seeds: tuple
    engines: tuple
    lr_grid: tuple
    axes: tuple
    stage1_steps: int
    dko_steps: int
    finetune_steps: int
    eval_items: int | None
    noise_eval: bool
    calib_steps: int
    lr_search: str = "first_seed"
    lr_tie_rel: float = 0.0
    stage1_stop: str = "plateau"

    @property
    def lr_search_seed(self) -> int:
        """The seed on which learning rates are selected when ``lr_search == 'first_seed'``."""
        return self.seeds[0]

    @property
    def ref_axis(self) -> str:
        """Budget axis on which learning rates are selected: FLOPs where measured, since a
        FLOP-budgeted snapshot does not depend on the machine's speed, so the choice repeats."""
        return "flops" if "flops" in self.axes else self.axes[0]

    @property
    def ref_fraction(self) -> float:
        """Budget fraction at which learning rates are selected (1.0, else the nearest one)."""
        return min(self.fractions, key=lambda f: (abs(math.log(f / REFERENCE_FRACTION)), -f))


def settings_from_config(cfg) -> Settings:
    b = cfg.budget
    axes = tuple(getattr(b, "axes", AXES))
    bad = [a for a in axes if a not in AXES]
    if bad or not axes:
        raise ValueError(f"budget.axes must be a non-empty subset of {AXES}, got {axes}")
    fractions = tuple(sorted(float(f) for f in b.ladder_fractions))
    if any(not f > 0 for f in fractions):
        raise ValueError(f"budget.ladder_fractions must be positive, got {b.ladder_fractions}")
    lr_grid = tuple(float(m) for m in b.lr_grid)
    if any(not m > 0 for m in lr_grid):
        raise ValueError(f"budget.lr_grid must be positive multipliers, got {b.lr_grid}")
    eval_items = getattr(b, "eval_items", None)
    lr_search = str(getattr(b, "lr_search", "first_seed"))
    if lr_search not in ("first_seed", "every_seed"):
        raise ValueError(f"budget.lr_search must be 'first_seed' or 'every_seed', got {lr_search!r}")
    stage1_stop = str(getattr(b, "stage1_stop", "plateau"))
    if stage1_stop not in STAGE1_STOPS:
        raise ValueError(f"budget.stage1_stop must be one of {STAGE1_STOPS}, got {stage1_stop!r}")
    if not b.seeds:
        raise ValueError("budget.seeds is empty: list at least one seed, e.g. [0, 1, 2]")
    return Settings(
        fractions=fractions, seeds=tuple(int(s) for s in b.seeds), engines=tuple(b.engines), lr_grid=lr_grid,
        axes=axes, stage1_steps=int(getattr(b, "stage1_steps", 0)),
        dko_steps=int(getattr(b, "dko_steps", 0)),
        finetune_steps=int(getattr(b, "finetune_steps", cfg.dko.finetune_steps)),
        eval_items=None if eval_items in (None, 0) else int(eval_items),
        noise_eval=bool(getattr(b, "noise_eval", False)), calib_steps=int(getattr(b, "calib_steps", 3)),
        lr_search=lr_search, lr_tie_rel=float(getattr(b, "lr_tie_rel", 0.0)), stage1_stop=stage1_stop)


def main_chain_steps(results_dir: str | Path) -> tuple[int, int]:
    """``(N1, N2)``: the steps the main chain's stage 1 (its plateau rule) and stage 2 (its stopping
    rule) ran, from ``<results_dir>/stage1/log.csv`` and ``<results_dir>/dko/summary.csv``."""
    results_dir = Path(results_dir)
    log, summary = results_dir / "stage1" / "log.csv", results_dir / "dko" / "summary.csv"
    for p, what in ((log, "stage1"), (summary, "dko")):
        if not p.exists():
            raise BudgetProtocolError(f"{p} is missing: the budget unit is the main chain's DKO run, so run it first "
                                      f"(snakemake --cores 4 {p}), or set budget.stage1_steps and budget.dko_steps")
    n1 = int(pd.read_csv(log, usecols=["step"])["step"].max())
    n2 = int(pd.read_csv(summary)["steps"].iloc[0])
    return n1, n2


def resolve_reference_run(settings: Settings, results_dir: str | Path) -> Settings:
    """``settings`` with ``stage1_steps`` / ``dko_steps`` of 0 replaced by the main chain's counts."""
    if settings.stage1_steps > 0 and settings.dko_steps > 0:
        return settings
    n1, n2 = main_chain_steps(results_dir)
    return replace(settings, stage1_steps=settings.stage1_steps or n1, dko_steps=settings.dko_steps or n2)


def lr_source(settings: Settings, method: str, engine: str | None, seed: int) -> tuple | None:
    """The job whose selected lr multiplier this job reuses, as ``(method, engine, seed)``; None = search here.

    ``electronic`` trains nothing of its own (it evaluates stage-1 snapshots): always None.
    Stage 1 trains at the main chain's rate (the run that defines the budget unit): None.
    """
    if method == "electronic" or method in SEED_JOBS or settings.lr_search == "every_seed":
        return None
    first = settings.lr_search_seed
    if seed == first and engine == "fast":
        return None
    return (method, "fast", first)


def chosen_lr_mult(table: pd.DataFrame | str | Path) -> float:
    """The lr multiplier a finished job selected, from its output table (or CSV path).

    A stage-1 job's table is its lr search (``chosen`` column); a method job's table has
    one ``lr_mult`` throughout.
    """
    name = str(table) if isinstance(table, (str, Path)) else "the job's table"
    df = pd.read_csv(table) if isinstance(table, (str, Path)) else table
    if "lr_mult" not in df.columns or df.empty:
        raise BudgetProtocolError(f"{name} has no lr_mult rows: it is not a finished job of the experiment "
                                  f"(rerun the job it comes from)")
    if "chosen" in df.columns:
        df = df[df["chosen"].astype(bool)]
    mults = sorted(set(float(m) for m in df["lr_mult"]))
    if len(mults) != 1:
        raise BudgetProtocolError(f"{name} does not name one selected lr multiplier (found {mults})")
    return mults[0]


@dataclass(frozen=True)
class Target:
    """One budget a run must be snapshotted at: ``value`` on ``axis`` (seconds or FLOPs)."""

    key: str
    axis: str
    value: float

    def crossed(self, meter: BudgetMeter) -> bool:
        return (meter.wall_s if self.axis == "wall" else meter.flops) >= self.value


def target_key(kind: str, engine: str, axis: str, fraction: float) -> str:
    return f"{kind}|{engine}|{axis}|{fraction:g}"


def _axis_field(axis: str) -> str:
    return "wall_s" if axis == "wall" else "flops"


def make_budgets(calib: dict, settings: Settings) -> dict:
    """Reference costs per engine and the absolute ladders, from a calibration."""
    s1 = calib["stage1_step"]
    out = {"stage1": {k: settings.stage1_steps * s1[k] for k in ("wall_s", "cpu_s", "flops")}, "engines": {}}
    for engine in settings.engines:
        s2 = {k: settings.dko_steps * calib["stage2_step"][engine][k] for k in ("wall_s", "cpu_s", "flops")}
        ft = dict(calib["finetune"][engine])
        c_ref = {k: out["stage1"][k] + s2[k] for k in s2}
        out["engines"][engine] = {"stage2": s2, "finetune": ft, "c_ref": c_ref}
    return out


def stage1_targets(budgets: dict, settings: Settings, engines: Iterable[str] | None = None) -> list[Target]:
    """Stage-1 budgets: ``electronic`` at B, ``dko`` at B - S2, ``dko_ft`` at B - S2 - FT (feasible ones)."""
    out: dict[str, Target] = {}
    for engine in engines or settings.engines:
        e = budgets["engines"][engine]
        for axis in settings.axes:
            f_ = _axis_field(axis)
            for frac in settings.fractions:
                b = frac * e["c_ref"][f_]
                for kind, value in (("electronic", b), ("dko", b - e["stage2"][f_]),
                                    ("dko_ft", b - e["stage2"][f_] - e["finetune"][f_])):
                    if value > 0:
                        key = target_key(kind, engine, axis, frac)
                        out[key] = Target(key, axis, value)
    return list(out.values())


def reference_stage1_target(budgets: dict, settings: Settings) -> Target:
    """The end of the reference stage 1 (exactly ``N1`` steps: half a step short of ``N1`` step-FLOPs)."""
    per = budgets["stage1"]["flops"] / max(1, settings.stage1_steps)
    return Target("ref|stage1", "flops", (settings.stage1_steps - 0.5) * per)


def e2e_targets(budgets: dict, settings: Settings, engine: str, start: dict | None = None) -> list[Target]:
    """``f x C_ref`` on each axis; with a warm ``start`` meter only budgets above it."""
    out = []
    c = budgets["engines"][engine]["c_ref"]
    for axis in settings.axes:
        f_ = _axis_field(axis)
        for frac in settings.fractions:
            b = frac * c[f_]
            if start is not None and not b > start[f_]:
                continue
            out.append(Target(target_key("e2e", engine, axis, frac), axis, b))
    return out


def evals_for(fraction: float, settings: Settings) -> tuple:
    ev = ("crop", "full_psf")
    return ev + ("full_psf_noise",) if settings.noise_eval else ev


def pick_lr_mult(search: list[dict], tie_rel: float = 0.0, base: float = 1.0) -> float:
    """The multiplier with the lowest validation AbsRel, unless it beats ``base``'s by no more
    than ``tie_rel`` (relative): then ``base``, so that noise never decides a committed result.
    ``search``: ``[{"lr_mult", "val_abs_rel"}, ...]``; exact ties between non-base multipliers go to the smaller one; without ``base`` in ``search``
    the best multiplier is taken as it is."""
    t = pd.DataFrame(search).sort_values(["val_abs_rel", "lr_mult"])
    best = float(t.iloc[0]["lr_mult"])
    at_base = t[t["lr_mult"] == base]
    if len(at_base) and best != base:
        b, v = float(at_base["val_abs_rel"].iloc[0]), float(t.iloc[0]["val_abs_rel"])
        if b - v <= tie_rel * b:
            return float(base)
    return best


def to_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


SPEND_WALL_RTOL = 0.25
"""Slack of the wall-clock spend bounds (:func:`spend_violations`), as a fraction of the budget:
wall costs per step are calibrated medians, and a run's steps take longer or shorter than them
(load, caches), so the wall bounds are the FLOP bounds widened by this fraction of the budget."""

_SPEND_FIELDS = {"wall": ("budget_s", "spent_s", "wall_s"), "flops": ("budget_flops", "spent_flops", "flops")}


def spend_violations(table: pd.DataFrame, budgets: dict, calib: dict, n1: int, *,
                     wall_rtol: float = SPEND_WALL_RTOL, stage2_stops_early: bool = False,
                     stage1_stop: str = "budget") -> pd.DataFrame:
    """The rows of a job table that spent outside the protocol's bounds on their own budget axis.

    ``budgets``, ``calib``: the ``budgets`` and ``calibration`` of the run's ``budgets.json``;
    ``n1``: the stage-1 steps ``N1`` (its plateau). On a row's axis (``budget_axis``; ``budget_s``
    / ``spent_s`` for ``wall``, ``budget_flops`` / ``spent_flops`` for ``flops``), with ``B`` the
    budget, ``C_ref`` the reference cost and ``s1`` / ``s2`` the calibrated cost of one stage-1 /
    stage-2 step of the row's engine, the spend must lie in:

    * ``electronic``: ``[B, B + s1]`` (stage 1 stops before a step once its meter has reached B);
      with ``stage1_stop='plateau'`` the lower bound is waived at the plateau (``steps == N1``:
      stage 1 never trains past it);
    * ``dko``, ``dko_ft``: ``[B' - s2, B + max(s1, s2) + s2 / 3]`` with ``B' = B``
      (``stage1_stop='budget'``) or ``min(B, C_ref)`` (``'plateau'``): stage 1 reaches its share of
      B (or its plateau) and stage 2 runs what the budget has left in whole steps, so it
      underspends by less than one stage-2 step (no lower bound when ``stage2_stops_early``, i.e.
      ``dko.stop_window > 0``: the stopping rule may end stage 2 sooner); it overshoots by less
      than one step of either stage plus the gain fit (a forward simulation, a third of a step);
    * ``e2e_scratch``, ``e2e_warm``: ``[B, B + spent / steps]`` (snapshotted when the meter first
      reaches B; the row's mean step stands for its last step).

    With ``stage1_stop='plateau'``, ``electronic`` and ``dko*`` rows must also have
    ``steps <= N1``. FLOPs are exact; on the wall
    axis both bounds are widened by ``wall_rtol * B`` (:data:`SPEND_WALL_RTOL`). Returns the
    offending rows with the columns ``spend_lo``, ``spend_hi`` and ``violation`` (why, in words);
    empty when every row is inside its bounds.
    """
    if not wall_rtol >= 0:
        raise ValueError(f"wall_rtol must be >= 0, got {wall_rtol}")
    if stage1_stop not in STAGE1_STOPS:
        raise ValueError(f"stage1_stop must be one of {STAGE1_STOPS}, got {stage1_stop!r}")
    plateau = stage1_stop == "plateau"
    bad = []
    for idx, r in table.iterrows():
        axis, method, engine = r["budget_axis"], r["method"], r["engine"]
        if axis not in _SPEND_FIELDS:
            raise ValueError(f"row {idx}: budget_axis must be one of {AXES}, got {axis!r}")
        b_col, s_col, field = _SPEND_FIELDS[axis]
        b, spent, steps = float(r[b_col]), float(r[s_col]), int(r["steps"])
        s1 = float(calib["stage1_step"][field])
        s2 = float(calib["stage2_step"][engine][field])
        c_ref = float(budgets["engines"][engine]["c_ref"][field])
        if method == "electronic":
            lo, hi = (b if steps < n1 or not plateau else -math.inf), b + s1
        elif method in ("dko", "dko_ft"):
            floor = min(b, c_ref) if plateau else b
            lo, hi = (-math.inf if stage2_stops_early else floor - s2), b + max(s1, s2) + s2 / 3.0
        elif method in ("e2e_scratch", "e2e_warm"):
            lo, hi = b, b + spent / max(1, steps)
        else:
            raise ValueError(f"row {idx}: no spend bounds for method {method!r} (one of {METHODS})")
        if axis == "wall":
            lo, hi = lo - wall_rtol * b, hi + wall_rtol * b
        why = []
        if spent < lo:
            why.append(f"underspent: {s_col}={spent:.6g} < {lo:.6g}")
        if spent > hi:
            why.append(f"overspent: {s_col}={spent:.6g} > {hi:.6g}")
        if plateau and method not in ("e2e_scratch", "e2e_warm") and steps > n1:
            why.append(f"stage 1 trained {steps} steps, past its plateau N1={n1}")
        if why:
            bad.append({**r.to_dict(), "spend_lo": lo, "spend_hi": hi, "violation": "; ".join(why)})
    return pd.DataFrame(bad, columns=list(table.columns) + ["spend_lo", "spend_hi", "violation"])


def check_spend(table: pd.DataFrame, budgets: dict, calib: dict, n1: int, **kw) -> None:
    """Raise :class:`BudgetProtocolError` naming every row of ``table`` outside its spend bounds
    (:func:`spend_violations`, which takes the same arguments)."""
    bad = spend_violations(table, budgets, calib, n1, **kw)
    if len(bad):
        raise BudgetProtocolError(f"{len(bad)} row(s) spent outside the protocol's budget bounds:\n"
                                  + "\n".join(violation_lines(bad)))


def violation_lines(bad: pd.DataFrame) -> list[str]:
    """One indented line per row of a :func:`spend_violations` table: which run, and why."""
    return [f"  {r.method} {r.engine} seed {r.seed} {r.budget_axis} x{r.budget_fraction:g} ({r.eval}): "
            f"{r.violation}" for r in bad.itertuples()]


def check_study_spend(table: pd.DataFrame, runs: list[dict], *, stage2_stops_early: bool = False,
                      wall_rtol: float = SPEND_WALL_RTOL) -> pd.DataFrame:
    """Check a whole study's job table against the spend bounds, seed by seed.

    ``runs``: the seeds' ``budgets.json`` contents (keys ``seed``, ``budgets``, ``calibration``,
    ``settings``; ``settings['stage1_steps']`` is ``N1`` and ``settings['stage1_stop']`` the stage-1
    mode, ``'plateau'`` where a file predates the option). FLOPs are exact, so a row outside its
    bounds on the FLOP axis raises :class:`BudgetProtocolError`; wall-clock spends depend on the
    machine's load, so the wall rows outside theirs are returned (the caller reports them).
    A seed in ``table`` without a run raises too.
    """
    by_seed = {int(r["seed"]): r for r in runs}
    missing = sorted(set(int(s) for s in table["seed"].unique()) - set(by_seed))
    if missing:
        raise BudgetProtocolError(f"no budgets.json for seed(s) {missing}: pass every seed's "
                                  "equal_budget/stage1_<seed>/budgets.json")
    flagged = []
    for seed, run in by_seed.items():
        rows = table[table["seed"] == seed]
        if rows.empty:
            continue
        st = run["settings"]
        flagged.append(spend_violations(rows, run["budgets"], run["calibration"], int(st["stage1_steps"]),
                                        wall_rtol=wall_rtol, stage2_stops_early=stage2_stops_early,
                                        stage1_stop=st.get("stage1_stop", "plateau")))
    bad = pd.concat(flagged, ignore_index=True) if flagged else pd.DataFrame(columns=["budget_axis"])
    exact = bad[bad["budget_axis"] == "flops"]
    if len(exact):
        raise BudgetProtocolError(f"{len(exact)} row(s) spent outside the protocol's FLOP bounds:\n"
                                  + "\n".join(violation_lines(exact)))
    return bad[bad["budget_axis"] == "wall"].reset_index(drop=True)
