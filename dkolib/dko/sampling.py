"""Batches for the training loops: a seeded, resumable sampler and the collate function.

:class:`BatchSampler` draws shuffled batches without replacement per epoch from its own
generator, and its state is checkpointed with the run, so a resumed run draws exactly the
batches an uninterrupted one would. :func:`collate` stacks dataset items into a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class BatchSampler:
    """Shuffled batches without replacement per epoch, from its own seeded generator.

    The state (generator, current permutation, position) is checkpointed so that
    a resumed run draws exactly the batches an uninterrupted one would.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int):
        if n_items < 1:
            raise ValueError("dataset is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size = int(n_items), int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.pos = 0

    def next_indices(self) -> list[int]:
        out = []
        while len(out) < self.batch_size:
            if self.pos >= self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            take = min(self.batch_size - len(out), self.n - self.pos)
            out += self.perm[self.pos:self.pos + take].tolist()
            self.pos += take
        return out

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos,
                "n": self.n, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or state["batch_size"] != self.batch_size:
            raise ValueError(f"sampler checkpoint is for n={state['n']}, batch={state['batch_size']}; "
                             f"this run has n={self.n}, batch={self.batch_size}")
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])


def collate(items: Sequence[dict], device: torch.device | str | None = None) -> dict:
    """Stack dataset items ``{"rgb": [3,H,W], "depth_m": [1,H,W]}`` into a batch (on ``device``)."""
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]).to(device or "cpu")
            for k in ("rgb", "depth_m")}
