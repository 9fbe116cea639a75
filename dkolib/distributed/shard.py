"""Which output channels, and so which metasurfaces, each process of a sharded stage 2 optimises.

A conv weight ``[C_out, C_in, k, k]`` becomes ``E = 2 C_out C_in`` metasurfaces, element
``e = (o * C_in + i) * 2 + s``: the ``2 C_in`` elements of output channel ``o`` are the
contiguous block ``[2 C_in o, 2 C_in (o + 1))``. Output channels are dealt out in contiguous
blocks balanced by count: with ``C_out = q W + r`` the first ``r`` ranks get ``q + 1``
channels and the others ``q`` (5 over 2: ``[0, 1, 2], [3, 4]``). With ``C_out < W`` the last
``W - C_out`` ranks get none: they take no part in the optimisation. Rank 0 always has
channels, so it can gather the array and write the results.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


def shard_channels(c_out: int, world_size: int) -> list[range]:
    """Contiguous blocks of output channels, one per rank, sizes differing by at most one.

    Args:
        c_out: output channels (>= 1); world_size: processes (>= 1).
    Returns ``world_size`` ranges that tile ``range(c_out)`` in order (some empty when
    ``c_out < world_size``).
    """
    c_out, world_size = int(c_out), int(world_size)
    if c_out < 1 or world_size < 1:
        raise InputError(f"need at least one output channel and one process, got C_out={c_out}, world size {world_size}")
    base, extra = divmod(c_out, world_size)
    blocks, start = [], 0
    for rank in range(world_size):
        size = base + (1 if rank < extra else 0)
        blocks.append(range(start, start + size))
        start += size
    return blocks


@dataclass(frozen=True)
class ShardPlan:
    """The output channels and elements of every rank for a ``[C_out, C_in, k, k]`` weight.

    Attributes:
        c_out, c_in: conv output / input channels; world_size: processes.
    """

    c_out: int
    c_in: int
    world_size: int

    def __post_init__(self) -> None:
        if int(self.c_in) < 1:
            raise InputError(f"need at least one input channel, got C_in={self.c_in}")
        shard_channels(self.c_out, self.world_size)  # validates

    @property
    def shards(self) -> list[range]:
        """Output channels of each rank (:func:`shard_channels`)."""
        return shard_channels(self.c_out, self.world_size)

    def channels(self, rank: int) -> range:
        """Output channels of ``rank`` (may be empty)."""
        if not 0 <= rank < self.world_size:
            raise InputError(f"rank must be in [0, {self.world_size}), got {rank}")
        return self.shards[rank]

    def elements(self, rank: int) -> range:
        """Metasurfaces of ``rank``: ``[2 C_in o0, 2 C_in o1)`` for its channels ``[o0, o1)``."""
        ch = self.channels(rank)
        per = 2 * self.c_in
        return range(per * ch.start, per * ch.stop)

    @property
    def element_counts(self) -> list[int]:
        """Metasurfaces per rank, ``[world_size]``."""
        return [len(self.elements(r)) for r in range(self.world_size)]

    @property
    def active_ranks(self) -> list[int]:
        """Ranks with at least one channel (``0 .. min(C_out, W) - 1``)."""
        return [r for r, ch in enumerate(self.shards) if len(ch) > 0]

    @property
    def max_elements(self) -> int:
        """The largest shard's metasurface count (the padded block size of a collective)."""
        return max(self.element_counts)
