"""Snapshot runs and job folders of the equal-budget experiment.

One constant-learning-rate run serves every budget: :func:`train_with_snapshots` advances
it through its :class:`~dkolib.study.protocol.Target` budgets (seconds or FLOPs) and saves the
model (``snap_<step>.pt``) whenever one is crossed, recording ``{"step", "wall_s", "cpu_s",
"flops", "file"}`` per target key in the folder's manifest ``snapshots.json``.
:func:`claim_folder` stamps a job's folder (``job.json``) so resumable state is only reused by
the job that wrote it; :func:`cleanup_snapshots` drops a finished job's ``.pt`` files.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path
from collections.abc import Callable, Sequence

import torch.nn as nn

from ..dko.budget import BudgetMeter
from ..io import atomic_path, load_torch, save_torch
from .protocol import AXES, BudgetProtocolError, Target


def _manifest_path(work: Path) -> Path:
    return Path(work) / "snapshots.json"


def read_manifest(work: Path) -> dict:
    p = _manifest_path(work)
    return json.loads(p.read_text()) if p.exists() else {}


def _write_json(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))


def train_with_snapshots(model: nn.Module, param_groups: Callable[[], list], dataset, *, targets: Sequence[Target],
                         work: Path, seed: int, batch_size: int, steps_cap: int, loss_fn: Callable,
                         weight_decay: float, extra_step_flops: float = 0.0, initial: dict | None = None,
                         stop_after: str | None = None, checkpoint_every: int = 0, progress: bool = True,
                         desc: str = "train", final_at_cap: bool = False) -> dict:
    """Advance one constant-lr run through ``targets``, saving the model whenever one is crossed.

    The run lives in ``work`` (``ckpt.pt``, ``log.csv``, ``snap_<step>.pt`` and the manifest
    ``snapshots.json`` mapping each target key to ``{"step", "wall_s", "cpu_s", "flops", "file"}``).
    Each :func:`dkolib.dko.train.train_loop` call resumes the checkpoint and stops before the
    first step at which the meter has reached the nearest pending target on either axis,
    so the state saved for a target is exactly that of a fresh run with ``max_seconds`` /
    ``max_flops`` equal to it. Targets already in the manifest are skipped (job resume).

    Args:
        param_groups: zero-argument callable returning the AdamW groups (built after
            ``model`` exists; called for every ``train_loop`` call).
        initial: meter state the run starts from (e.g. the stage-1 cost of a warm start);
            ignored when resuming (the checkpoint holds the meter).
        stop_after: return as soon as this target key has been saved (later targets stay pending).
        final_at_cap: the run ends at ``steps_cap`` steps; targets it has not reached by then
            get its final state (a run trained to a fixed length that spends less than those
            budgets). Without it, reaching the cap first is an error (the cap was too low).
    Returns the manifest.
    """
    from ..dko.train import train_loop

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(work)
    missing = sorted(k for k, e in manifest.items() if not (work / e["file"]).exists())
    past_cap = sorted(k for k, e in manifest.items() if final_at_cap and int(e["step"]) > steps_cap)
    if past_cap or (missing and (stop_after is None or stop_after in missing)):
        # the folder's state cannot be resumed (snapshots deleted, or a manifest copied without
        # them: the checkpoint may lie past the missing points), or it belongs to a run that went
        # on past this run's end: the run starts over
        why = (f"snapshots {missing} listed in {_manifest_path(work).name} are missing" if not past_cap else
               f"snapshots {past_cap} lie past this run's last step ({steps_cap})")
        warnings.warn(f"{work}: {why}; restarting this run from scratch", RuntimeWarning, stacklevel=2)
        for f in [_manifest_path(work), work / "ckpt.pt", work / "log.csv", *work.glob("snap_*.pt")]:
            f.unlink(missing_ok=True)
        manifest = {}
    pending = [t for t in targets if t.key not in manifest]
    while pending:
        if stop_after is not None and stop_after in manifest:
            break
        lim = {a: min((t.value for t in pending if t.axis == a), default=None) for a in AXES}
        meter = BudgetMeter()
        if initial is not None and not (work / "ckpt.pt").exists():
            meter.load_state_dict(initial)
        hist = train_loop(model, param_groups(), dataset, steps=steps_cap, batch_size=batch_size, seed=seed,
                          log_csv=work / "log.csv", ckpt=work / "ckpt.pt", loss_fn=loss_fn,
                          weight_decay=weight_decay, lr_decay_at=None, eval_fn=None,
                          checkpoint_every=checkpoint_every, budget=meter, max_seconds=lim["wall"],
                          max_flops=lim["flops"], extra_step_flops=extra_step_flops, progress=progress, desc=desc)
        step = int(hist["step"].iloc[-1]) if len(hist) else 0
        crossed = [t for t in pending if t.crossed(meter)]
        if not crossed and final_at_cap and step >= steps_cap:
            crossed = list(pending)
        if not crossed:
            raise BudgetProtocolError(
                f"{desc}: the run hit its step cap ({steps_cap}) before reaching budget "
                f"{min(pending, key=lambda t: t.value)}; raise the cap")
        fname = f"snap_{step:07d}.pt"
        if not (work / fname).exists():
            save_torch({"state_dict": copy.deepcopy(model.state_dict()), "step": step,
                        "meter": meter.state_dict()}, work / fname)
        for t in crossed:
            manifest[t.key] = {"step": step, "file": fname, **meter.snapshot()}
        _write_json(manifest, _manifest_path(work))
        pending = [t for t in pending if t.key not in manifest]
    return manifest


def load_snapshot(work: Path, entry: dict) -> dict:
    return load_torch(Path(work) / entry["file"], map_location="cpu")


JOB_STAMP = "job.json"
"""File in a job's folder naming the job and configuration its resumable state belongs to."""


def claim_folder(folder: Path, stamp: dict, normalize: Callable[[dict], dict] | None = None) -> None:
    """Make ``folder`` this job's: keep its state only if it was written by the same job.

    A job resumes from what its folder holds (calibration, checkpoints, snapshot manifests).
    State written under another configuration, learning rate or seed, or of unknown origin
    (no stamp, e.g. files copied from another machine), would silently mix two runs, so the
    folder is emptied first (with a warning) and the job starts over. ``normalize`` maps a
    stamp found in the folder to the form ``stamp`` has (it drops what no longer belongs in one).
    """
    folder = Path(folder)
    stamp = json.loads(json.dumps(stamp))  # tuples -> lists, as read back
    path = folder / JOB_STAMP
    if folder.exists() and any(folder.iterdir()):
        old = json.loads(path.read_text()) if path.exists() else None
        if old is not None and normalize is not None:
            old = json.loads(json.dumps(normalize(old)))
        if old == stamp:
            return
        why = "no job stamp" if old is None else "another job or configuration"
        warnings.warn(f"{folder} holds state of {why}: emptying it, the job starts over", RuntimeWarning,
                      stacklevel=2)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(stamp, path)


def cleanup_snapshots(work: Path) -> None:
    """Delete a finished method job's ``.pt`` files (snapshots, checkpoints, stage-2 arrays).

    They are large (every metasurface's latent, plus Adam state) and only needed while the
    job runs or resumes; logs and the lr-search table stay. Never used on the stage-1 folder.
    """
    for f in Path(work).rglob("*.pt"):
        f.unlink()
