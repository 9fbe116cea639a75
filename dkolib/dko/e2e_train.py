"""The end-to-end (E2E) baseline's run: metasurfaces and network trained jointly.

:func:`run_e2e` builds the hybrid (a fresh or warm-started ``DepthNet`` behind a
metasurface array), and trains it with :func:`dkolib.dko.train.train_loop`, simulating the
optical front end in every step; under ``torchrun`` the metasurfaces are sharded over the
processes (:mod:`dkolib.distributed.e2e`). ``dkolib.dko.train`` re-exports it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from ..config import Config
from ..depth.losses import disparity_distillation_loss, make_depth_loss
from ..depth.network import DepthNet
from ..io import seed_everything, set_threads
from .budget import BudgetMeter
from .frontend import OpticalFrontEnd, make_hybrid, unit_gain
from .train import (_build_array, _get_dataset, _val_eval_fn, psf_step_flops, resolve_device, save_model,
                    train_loop)


def run_e2e(cfg: Config, out_dir: Path, cache_dir: Path, variant: str = "joint",
            teacher: DepthNet | None = None, engine: str | None = None, warm_start: DepthNet | None = None,
            max_seconds: float | None = None, max_flops: float | None = None,
            budget: BudgetMeter | None = None, steps: int | None = None, progress: bool = True) -> DepthNet:
    """End-to-end baseline with the optical front end (crop mode) simulated in every step.

    variant ``'joint'``: metasurface latents (lr ``cfg.e2e.lr_optics``) and the
    network (lr ``cfg.e2e.lr_net``) trained together with :func:`depth_loss`,
    the network from scratch (seeded init) or from ``warm_start`` (copied).
    variant ``'optics_only'``: the network is the frozen stage-1 ``teacher``
    (BatchNorm in eval mode); only the optics (and the electronic per-channel
    gain) is trained, loss = MSE to the teacher's disparities.
    In both, the gain is a parameter (lr ``lr_net``) initialised so each optical
    kernel has the norm of the reference electronic kernel (teacher / warm
    start / fresh init). The metasurface init is ``cfg.e2e.init``.
    Writes ``out_dir/{log.csv, ckpt.pt, model.pt}``; returns the hybrid model.

    Under ``torchrun --nproc_per_node N`` the metasurfaces are sharded over the processes
    (:mod:`dkolib.distributed.e2e`) and the network replicated, or data-parallel over the batch
    with ``e2e.network_parallel: data`` (:mod:`dkolib.distributed.data_parallel`): each process checkpoints to
    ``ckpt_rank{r}of{N}.pt`` and rank 0 writes ``log.csv`` and ``model.pt``.
    """
    if variant not in ("joint", "optics_only"):
        raise ValueError(f"variant must be 'joint' or 'optics_only', got {variant!r}")
    from ..distributed.env import launched_group

    with launched_group(resolve_device(cfg)) as device:
        return _run_e2e(cfg, out_dir, cache_dir, variant, teacher, engine, warm_start, max_seconds, max_flops,
                        budget, steps, progress, device)


def _run_e2e(cfg, out_dir, cache_dir, variant, teacher, engine, warm_start, max_seconds, max_flops, budget, steps,
             progress, device) -> DepthNet:
    engine = engine or cfg.optics.engine
    out_dir = Path(out_dir)
    set_threads(cfg.threads)
    gen = seed_everything(cfg.seed)
    train_set = _get_dataset(cfg, "train", Path(cache_dir), flip=True)
    val_set = _get_dataset(cfg, "val", Path(cache_dir))
    budget = budget if budget is not None else BudgetMeter()
    e = cfg.e2e
    if variant == "joint":
        base = copy.deepcopy(warm_start) if warm_start is not None else \
            DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    else:
        if teacher is None:
            raise ValueError("variant 'optics_only' needs the stage-1 teacher network")
        base = teacher
    reference = base.conv1_weight().detach().clone()
    array = _build_array(cfg, base.conv1_channels, e.init, gen)
    model = make_hybrid(base, array, cfg.optics, mode="crop", engine=engine, trainable_gain=True,
                        gain=unit_gain(base.conv1_channels, 3, cfg.optics.gain), cache_psf=False)
    fe: OpticalFrontEnd = model.first_layer
    n_el = fe.n_out * fe.n_in * 2
    extra = psf_step_flops(cfg, n_el, fe.window_px, engine, backward=True)
    shard, ckpt, log_csv, rank = _e2e_shard(fe, out_dir, e.network_parallel)
    if shard is None:
        fe.match_gain(reference, method="norm")
        model.to(device)
    else:  # the starting gain from the shards' PSFs: no process simulates the whole array
        model.to(device)
        if shard.active:
            shard.array.to(device)
        with torch.no_grad(), fe.injected_psf(shard.gather(shard.compute())):
            fe.match_gain(reference.to(device), method="norm")
    if shard is not None and shard.data_parallel:
        from ..distributed.data_parallel import convert_sync_batchnorm
        convert_sync_batchnorm(model)
    optics_params = shard.parameters() if shard is not None else list(array.parameters())
    optics_group = {"params": optics_params, "lr": e.lr_optics, "weight_decay": 0.0}

    if variant == "joint":
        net_params = model.backend_parameters() + [fe.gain]
        groups = [optics_group, {"params": net_params, "lr": e.lr_net}]
        loss_fn = make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m)
        set_mode = None
    else:
        frozen_teacher = copy.deepcopy(teacher).eval()
        for p in frozen_teacher.parameters():
            p.requires_grad_(False)
        for p in model.backend_parameters():
            p.requires_grad_(False)
        groups = [optics_group, {"params": [fe.gain], "lr": e.lr_net, "weight_decay": 0.0}]

        def loss_fn(m: nn.Module, batch: dict) -> torch.Tensor:
            with torch.no_grad():
                target = frozen_teacher(batch["rgb"])
            return disparity_distillation_loss(m(batch["rgb"]), target)

        def set_mode(m: nn.Module) -> None:
            m.eval()
            m.first_layer.train()

    train_loop(model, groups, train_set, steps=steps or e.steps, batch_size=e.batch_size, seed=cfg.seed,
               log_csv=log_csv, ckpt=ckpt, loss_fn=loss_fn,
               weight_decay=cfg.stage1.weight_decay, eval_fn=_val_eval_fn(val_set, cfg),
               eval_every=cfg.stage1.eval_every, checkpoint_every=cfg.stage1.checkpoint_every,
               budget=budget, max_seconds=max_seconds, max_flops=max_flops, extra_step_flops=extra,
               set_train_mode=set_mode, progress=progress and rank == 0, desc=f"e2e-{variant}",
               optics_shard=shard)
    if shard is not None:
        from ..distributed.e2e import merge_budget
        shard.sync_to_model()
        merge_budget(budget)
        if shard.data_parallel:
            from ..distributed.data_parallel import revert_sync_batchnorm
            revert_sync_batchnorm(model)
        array.latent.requires_grad_(True)  # the whole array is the model's again
    if rank == 0:
        save_model(model, out_dir / "model.pt", cfg, budget, kind=f"hybrid_e2e_{variant}")
    return model


def _e2e_shard(fe: OpticalFrontEnd, out_dir: Path, network_parallel: str = "replicated"):
    """``(shard, ckpt, log_csv, rank)`` of this process.

    One process (no torchrun, or a world of one): no shard, ``out_dir/ckpt.pt`` and
    ``out_dir/log.csv``. Under ``torchrun`` with a process group (the scripts make it): this
    process's :class:`~dkolib.distributed.e2e.OpticsShard`, its own checkpoint
    (``ckpt_rank{r}of{W}.pt``) and log (rank 0: ``log.csv``), after checking that every process
    starts from the same step.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None, out_dir / "ckpt.pt", out_dir / "log.csv", 0
    from ..distributed.e2e import OpticsShard, check_same_start
    from ..distributed.stage2 import shard_ckpt_path

    rank, world = dist.get_rank(), dist.get_world_size()
    ckpt = shard_ckpt_path(out_dir, rank, world)
    check_same_start(ckpt)
    log_csv = out_dir / "log.csv" if rank == 0 else out_dir / f"log_rank{rank}of{world}.csv"
    return OpticsShard(fe, network_parallel=network_parallel), ckpt, log_csv, rank
