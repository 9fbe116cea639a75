"""E2E training (and the fine-tunes) with the metasurfaces sharded over processes.

A step of E2E simulates the PSFs of all ``E`` metasurfaces (at the paper's size, 384 of
1025 x 1025 cells: nearly all of a step's work) and then runs the network on a batch. The
PSFs are independent per metasurface, and the network needs only the ``[E, W, W]`` PSFs on
the kernel window (W = 7: tiny). So each process owns a contiguous block of output channels
(:class:`~dkolib.distributed.shard.ShardPlan`), keeps only those metasurfaces' latents and
their AdamW state, simulates their PSFs, and all-gathers the PSFs (``E W^2`` floats per
step). With the network replicated, every process then runs the same network on the same
batch, so every process computes the same gradient of the loss with respect to every PSF,
and each one back-propagates its own block into its own latents without any further
communication. The network's parameters follow the same
trajectory on every process (checked at every checkpoint: :meth:`OpticsShard.check_replicas`).

Replicated (``e2e.network_parallel: replicated``, the default), a distributed run is the
single-process run: the same loss and network at every step, the PSFs of a block the same as
those of the whole array to float32 rounding (:mod:`dkolib.distributed.stage2` explains the
last-ulp differences of a shard's tail). The price is Amdahl's: the network step does not
shrink with the process count, which caps the speed-up at (PSF + network) / network
(:mod:`dkolib.distributed.scaling` models it from ``results/costs.csv``). Data-parallel
(``e2e.network_parallel: data``, :mod:`dkolib.distributed.data_parallel`), each process runs
the network on its slice of the batch with BatchNorm synchronised, and the network's and the
PSFs' gradients are all-reduced (:meth:`OpticsShard.reduce_gradients`), the single-process run
to float rounding. The budget meter counts what every process spends: each metasurface's PSF
once and the network step ``W`` times (replicated) or once over the slices (data-parallel), so
the FLOP axis of the equal-budget study charges a distributed run for what it ran.

Checkpoints are per process (``ckpt_rank{r}of{W}.pt``, as stage 2's:
:func:`~dkolib.distributed.stage2.shard_ckpt_path`); each
holds the whole array (gathered before every save) and this process's AdamW state, so a run
resumes with the same number of processes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from .comm import all_gather_blocks, all_gather_objects
from .shard import ShardPlan


def psf_bytes_per_step(plan: ShardPlan, window_px: int, itemsize: int = 4) -> dict[str, int]:
    """Bytes the PSF all-gather of one distributed E2E step moves.

    Each active rank's block ``[n_max, W, W]`` (float32, padded to the largest block) goes to
    every other rank once (ring all-gather). Returns ``{"block_bytes", "sent_per_rank",
    "sent_total"}`` (0 with one process).
    """
    world = plan.world_size
    block = plan.max_elements * int(window_px) ** 2 * int(itemsize)
    if world < 2:
        return {"block_bytes": block, "sent_per_rank": 0, "sent_total": 0}
    return {"block_bytes": block, "sent_per_rank": (world - 1) * block, "sent_total": world * (world - 1) * block}


class OpticsShard:
    """This process's metasurfaces of an :class:`~dkolib.dko.frontend.OpticalFrontEnd`.

    Made from a front end whose array every process built alike (same seed): the shard copies
    its block of latents into a :class:`~dkolib.optics.metasurface.MetasurfaceArray` of this
    process's output channels, and the front end's own array is frozen (it is only a copy that
    :meth:`sync_to_model` refreshes for evaluation and saving).

    Args:
        frontend: the model's front end (``n_out`` output channels, ``n_in`` inputs).
        group: process group (default: the default group, which must exist).
        network_parallel: ``'replicated'`` (every process runs the network on the whole batch)
            or ``'data'`` (each on its slice, BatchNorm and gradients synchronised:
            :mod:`~dkolib.distributed.data_parallel`; the model's BatchNorm layers must then be
            :class:`~dkolib.distributed.data_parallel.SyncBatchNorm2d`, which
            :func:`~dkolib.distributed.data_parallel.convert_sync_batchnorm` makes).
    """

    def __init__(self, frontend, group=None, network_parallel: str = "replicated"):
        import torch.distributed as dist

        from ..optics.metasurface import MetasurfaceArray

        if not (dist.is_available() and dist.is_initialized()):
            raise InputError("OpticsShard needs a torch.distributed process group: launch under "
                             "`torchrun --nproc_per_node N` (the training scripts make the group)")
        from .data_parallel import check_mode

        if network_parallel == "data" and group is not None:
            raise InputError("a data-parallel network synchronises over the default process group only")
        self.frontend = frontend
        self.group = group
        self.data_parallel = check_mode(network_parallel) == "data"
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.plan = ShardPlan(frontend.n_out, frontend.n_in, self.world_size)
        self.elements = self.plan.elements(self.rank)
        self.sizes = self.plan.element_counts
        whole = frontend.array
        ch = self.plan.channels(self.rank)
        self.array = None
        if len(ch):
            self.array = MetasurfaceArray(len(ch), frontend.n_in, whole.optics_cfg, whole.atom, init="random",
                                          generator=torch.Generator().manual_seed(0))  # latents replaced below
            with torch.no_grad():
                self.array.latent.copy_(whole.latent[self.elements.start:self.elements.stop])
            if not torch.equal(self.array.wavelengths_m, whole.wavelengths_m[self.elements.start:self.elements.stop]):
                raise RuntimeError("the shard's wavelengths differ from the array's block: element order changed")
            self.array.to(whole.latent.device)
        frontend.freeze_optics(True)

    @property
    def active(self) -> bool:
        """Whether this process owns metasurfaces (False when ``C_out`` < processes)."""
        return self.array is not None

    def parameters(self) -> list[torch.Tensor]:
        """The trainable latents of this process (empty on an idle process)."""
        return [self.array.latent] if self.active else []

    def compute(self) -> torch.Tensor:
        """This process's PSFs ``[E_r, W, W]`` on the front end's window, differentiable in its latents."""
        from ..dko import frontend as fe_mod

        fe = self.frontend
        if not self.active:
            return torch.zeros((0, fe.window_px, fe.window_px), device=fe.gain.device)
        return fe_mod._compute_psf(self.array, self.array.optics_cfg, fe.window_px, fe.engine)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """The whole array's PSFs ``[E, W, W]`` (detached) from every process's block."""
        return all_gather_blocks(local.detach(), self.sizes, dim=0, group=self.group,
                                 what="the all-gather of the PSFs")

    def backward(self, local: torch.Tensor, psf_grad: torch.Tensor | None) -> None:
        """Back-propagate this process's block of ``d loss / d PSF [E, W, W]`` into its latents."""
        if self.active and psf_grad is not None and local.requires_grad:
            local.backward(psf_grad[self.elements.start:self.elements.stop])

    # -- the network's side of a step (identities when the network is replicated)
    def local_batch(self, batch: dict) -> dict:
        """This process's slice of the whole batch (data-parallel), else the whole batch."""
        if not self.data_parallel:
            return batch
        from .data_parallel import batch_slice

        return batch_slice(batch, self.rank, self.world_size)

    def weighted_loss(self, loss_fn, batch: dict):
        """``loss_fn`` scaled by this slice's share of the whole batch's normaliser (data-parallel),
        so that the processes' losses sum to the whole batch's; else ``loss_fn``."""
        if not self.data_parallel:
            return loss_fn
        from .data_parallel import all_reduce_sum_, batch_weight

        n_local = batch_weight(loss_fn, batch)
        total = float(all_reduce_sum_(torch.tensor([n_local], dtype=torch.float64), "the all-reduce of the loss weights"))
        share = n_local / total if total > 0 else 1.0 / self.world_size
        return lambda m, b: loss_fn(m, b) * share

    def reduce_gradients(self, params, psf_leaf: torch.Tensor | None) -> None:
        """Sum the network's gradients (``params``, this process's latents excluded) and the PSF
        gradients over the processes (data-parallel); nothing when the network is replicated."""
        if not self.data_parallel:
            return
        from .data_parallel import all_reduce_grads_, all_reduce_sum_

        own = {id(p) for p in self.parameters()}
        all_reduce_grads_([p for p in params if id(p) not in own])
        if psf_leaf is not None and psf_leaf.grad is not None:
            all_reduce_sum_(psf_leaf.grad, "the all-reduce of the PSF gradients")

    def charge_network(self, budget, key) -> None:
        """Charge ``budget`` with the network step of every process: ``W`` times this process's
        (replicated: all run the whole batch), or the sum of every process's slice (data-parallel;
        gathered once per batch shape, so every process's meter holds the same FLOPs)."""
        if not self.data_parallel:
            for _ in range(self.world_size):
                budget.charge(key, category="network")
            return
        cache = self.__dict__.setdefault("_network_flops", {})
        if key not in cache:
            cache[key] = sum(all_gather_objects(budget.cached_flops(key), group=self.group,
                                                what="the all-gather of the network's FLOPs"))
        budget.add_flops(cache[key], category="network")

    def reduce_loss(self, loss_value: float) -> float:
        """The whole batch's loss from this process's weighted one (data-parallel)."""
        if not self.data_parallel:
            return loss_value
        from .data_parallel import all_reduce_sum_

        return float(all_reduce_sum_(torch.tensor([loss_value], dtype=torch.float64), "the all-reduce of the loss"))

    @torch.no_grad()
    def sync_to_model(self) -> None:
        """Copy every process's latents into the front end's whole array (a collective)."""
        whole = self.frontend.array.latent
        n = whole.shape[-1]
        local = self.array.latent.detach() if self.active else whole.new_zeros((0, n, n))
        whole.copy_(all_gather_blocks(local, self.sizes, dim=0, group=self.group,
                                      what="the all-gather of the latents"))

    @torch.no_grad()
    def load_from_model(self) -> None:
        """Take this process's latents from the front end's whole array (after a checkpoint is loaded)."""
        if self.active:
            self.array.latent.copy_(self.frontend.array.latent[self.elements.start:self.elements.stop])

    def check_replicas(self, model: torch.nn.Module, what: str = "the network") -> None:
        """Raise on every process when the replicated parameters differ between processes.

        Compares a digest of every parameter and buffer but the array's latents (which
        :meth:`sync_to_model` makes equal): they must be equal to the bit.
        """
        import hashlib

        h = hashlib.sha1()
        for name, t in list(model.state_dict().items()):
            if name.endswith("array.latent"):
                continue
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        digests = all_gather_objects(h.hexdigest(), group=self.group, what="the check of the replicated network")
        if len(set(digests)) > 1:
            raise RuntimeError(f"the replicated parameters of {what} differ between processes "
                               f"({', '.join(d[:10] for d in digests)}): the processes ran different arithmetic "
                               "(different thread counts or CPU instruction sets?); set the same "
                               "torch.set_num_threads and ATEN_CPU_CAPABILITY on every process")


def check_same_start(ckpt: Path, group=None) -> None:
    """Raise the same :class:`InputError` on every process unless all start from the same step
    (all without a checkpoint, or all from checkpoints at one step)."""
    from ..io import load_torch

    step = int(load_torch(ckpt, map_location="cpu")["step"]) if Path(ckpt).exists() else None
    steps = all_gather_objects(step, group=group, what="the start-up check of a distributed run")
    if len(set(steps)) > 1:
        seen = ", ".join(f"rank {r}: " + ("no checkpoint" if s is None else f"step {s}") for r, s in enumerate(steps))
        raise InputError(f"the per-process checkpoints next to {ckpt} are at different steps ({seen}): the run was "
                         f"stopped while they were being written. Delete {Path(ckpt).parent}/ckpt_rank*.pt to start over")


def merge_budget(meter, group=None) -> None:
    """Make ``meter`` (the same on every process) the run's: wall the longest process's, CPU
    seconds summed. FLOPs already count every process (the module docstring) and must agree."""
    state = meter.state_dict()
    states = all_gather_objects({"wall_s": float(state["wall_s"]), "cpu_s": float(state["cpu_s"]),
                                 "flops": float(state["flops"])}, group=group, what="the all-gather of the budgets")
    if len({s["flops"] for s in states}) > 1:
        raise RuntimeError(f"the processes counted different FLOPs ({[s['flops'] for s in states]})")
    state["wall_s"] = max(s["wall_s"] for s in states)
    state["cpu_s"] = sum(s["cpu_s"] for s in states)
    meter.load_state_dict(state)
