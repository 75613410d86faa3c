"""Batch producers over `SplitRows`: the endless shuffled training stream, one padded pass
of an eval split, and global batches on the mesh (from host batches, or gathered on the
devices from a device-resident cached split).

Every producer reads rows through `SplitRows.read`; the training stream's state is
Grain's `{"next_index": j}` for both the host and the device path, so a checkpoint moves
between them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from crossjax.data.rows import SplitRows

ENDLESS = 2**62  # batches in the "endless" training stream


@dataclasses.dataclass(frozen=True)
class ShuffledBatchIndices:
    """Batch j -> positions (batch_size,) int64 of an endless shuffled stream.

    Epoch e is the permutation `np.random.default_rng((seed, e)).permutation(n)`; the
    concatenated epochs are cut into consecutive batches, so a batch may straddle two
    epochs and no example is dropped. Vectorised: a batch costs microseconds, where
    Grain's per-element `shuffle` cost ~1 ms per batch of 128, a third of a small model's
    step on CPU.
    """

    num_examples: int
    batch_size: int
    seed: int
    stream: int = 0  # > 0: an independent stream of the same seed (seeded by (seed, e, stream))

    def __call__(self, batch_index: int) -> np.ndarray:
        n = self.num_examples
        start = int(batch_index) * self.batch_size
        stop = start + self.batch_size
        parts = []
        for epoch in range(start // n, (stop - 1) // n + 1):
            lo, hi = max(start - epoch * n, 0), min(stop - epoch * n, n)
            parts.append(_epoch_permutation(n, self.seed, epoch, self.stream)[lo:hi])
        return np.concatenate(parts)


@functools.lru_cache(maxsize=8)
def _epoch_permutation(num_examples: int, seed: int, epoch: int, stream: int = 0) -> np.ndarray:
    key = [seed, epoch] if not stream else [seed, epoch, stream]
    return np.random.default_rng(key).permutation(num_examples)


@dataclasses.dataclass(frozen=True, eq=False)
class LabeledBatchIndices:
    """Batch j -> positions (batch_size,) int64: `labeled_batch_size` positions from the
    endless shuffled stream of `labeled` (each epoch of that small pool reshuffled), then
    batch_size - labeled_batch_size from the stream of `unlabeled`.

    The two streams are `ShuffledBatchIndices` of their pools (streams 1 and 2 of `seed`),
    so a batch depends only on j: deterministic and exactly resumable. `labeled` and
    `unlabeled` (int64 positions of the training part) are disjoint, so every batch holds
    exactly `labeled_batch_size` labelled rows. `data.paired_batch_size` uses the same
    two-pool batches with the complete examples as `labeled` and the rest as `unlabeled`.
    """

    labeled: np.ndarray
    unlabeled: np.ndarray
    batch_size: int
    labeled_batch_size: int
    seed: int

    def __call__(self, batch_index: int) -> np.ndarray:
        rest = self.batch_size - self.labeled_batch_size
        pools = ((self.labeled, self.labeled_batch_size, 1), (self.unlabeled, rest, 2))
        parts = [
            pool[ShuffledBatchIndices(len(pool), size, self.seed, stream)(batch_index)]
            for pool, size, stream in pools
            if size
        ]
        return np.concatenate(parts).astype(np.int64)


class IndexStream:
    """`ShuffledBatchIndices` (or `LabeledBatchIndices`) read in order, with Grain's
    iterator state format."""

    def __init__(self, batches: Callable[[int], np.ndarray], state: dict | None):
        self._batches = batches
        self._next = int(state["next_index"]) if state else 0

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        indices = self._batches(self._next)
        self._next += 1
        return indices

    def get_state(self) -> dict:
        return {"next_index": self._next}


@dataclasses.dataclass
class TrainSlice:
    """Grain map: (batch number, global batch of positions) -> this process's rows
    [lo, hi). A drawn caption is seeded by (seed, source index, epoch): same on resume."""

    rows: SplitRows
    lo: int
    hi: int
    seed: int

    def __call__(self, batch_number: int, positions: np.ndarray) -> dict[str, np.ndarray]:
        mine = np.asarray(positions[self.lo : self.hi])
        seeds = None
        if self.rows.arrays is None and self.rows.preprocess.draws_captions:
            n, first = len(self.rows), int(batch_number) * len(positions)
            seeds = [
                (self.seed, int(self.rows.indices[p]), (first + j) // n)
                for j, p in zip(range(self.lo, self.hi), mine, strict=True)
            ]
        return self.rows.read(mine, seeds)


@dataclasses.dataclass
class EvalBatch:
    """Grain map: eval batch number -> this process's slice [lo, hi) of a global batch,
    padded past the end (padding rows repeat row 0) with a `valid` (hi - lo,) bool entry."""

    rows: SplitRows
    global_batch: int
    lo: int
    hi: int

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        start = int(batch_index) * self.global_batch
        positions = np.arange(start + self.lo, start + self.hi)
        valid = positions < len(self.rows)
        batch = self.rows.read(np.where(valid, positions, 0))
        batch["valid"] = valid
        return batch


class DeviceGather:
    """Positions (B,) -> a global batch gathered from `arrays` kept replicated on the
    mesh, by one small jitted function whose output is sharded over the data axis: the
    data stays on the devices and nothing waits for the host."""

    def __init__(self, arrays: dict[str, np.ndarray], mesh):
        from crossjax.sharding import batch_sharding, replicated  # local: JAX-light import

        self.arrays = jax.device_put(arrays, replicated(mesh))
        self._gather = jax.jit(
            lambda arrays, rows: {k: v[rows] for k, v in arrays.items()},
            out_shardings=batch_sharding(mesh),
        )

    def __call__(self, positions: np.ndarray) -> dict[str, jax.Array]:
        return self._gather(self.arrays, np.asarray(positions, np.int32))


class GlobalBatches:
    """Global training batches (dict of jax.Arrays sharded over the mesh's data axis):
    `place` turns each item of `source` (host rows or positions) into one; `get_state()`
    is the source's state, which the trainer checkpoints."""

    def __init__(self, source: Iterator[Any], place: Callable[[Any], dict[str, jax.Array]]):
        self._source, self._place = source, place

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, jax.Array]:
        return self._place(next(self._source))

    def get_state(self) -> dict:
        return self._source.get_state()
