"""DKO stage 2 and E2E sharded over processes with ``torch.distributed`` (Gloo on CPU, NCCL on GPU).

Stage 2 fits one metasurface per (output channel, input channel, sign); the loss is a sum
over them and Adam is per-parameter, so each metasurface follows the trajectory it would
follow alone. A run launched with ``torchrun --nproc_per_node N`` therefore gives every
process a contiguous block of output channels (:mod:`.shard`) and exchanges only what the
history and the stopping rule need (:mod:`.comm`, :mod:`.stage2`).

Modules:

* :mod:`.env`: the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), the
  backend for a device and the process group's set-up and tear-down (with a timeout);
* :mod:`.shard`: which output channels (and metasurfaces) each process optimises;
* :mod:`.comm`: the collectives (blocks of unequal size), their byte counts, and
  :class:`RankFailureError`, the clear error a process raises when another one failed;
* :mod:`.stage2`: :func:`synthesize_sharded`, the sharded :func:`dkolib.dko.synthesis.synthesize`;
* :mod:`.e2e`: :class:`~dkolib.distributed.e2e.OpticsShard`, E2E's metasurfaces sharded over
  the processes, used by :func:`dkolib.dko.train.run_e2e` under torchrun;
* :mod:`.data_parallel`: E2E's network split over the batch (``e2e.network_parallel: data``),
  with synchronised BatchNorm and all-reduced gradients, instead of replicated;
* :mod:`.scaling`: a model of the paper's E2E run over many devices from one device's costs;
* :mod:`.launch`: start ``N`` local processes with torchrun's environment (tests, benchmarks).
"""

from .comm import RankFailureError, stage2_bytes_per_step
from .env import (TorchrunEnv, backend_for, destroy_process_group, init_process_group, launched_group,
                  process_group, rank_device)
from .launch import RankOutcome, find_free_port, launch_local, run_local
from .shard import ShardPlan, shard_channels
from .stage2 import synthesize_launched, synthesize_on_ranks, synthesize_sharded

__all__ = [
    "RankFailureError", "RankOutcome", "ShardPlan", "TorchrunEnv", "backend_for", "destroy_process_group",
    "find_free_port", "init_process_group", "launched_group", "launch_local", "process_group", "rank_device", "run_local",
    "shard_channels", "stage2_bytes_per_step", "synthesize_launched", "synthesize_on_ranks", "synthesize_sharded",
]
