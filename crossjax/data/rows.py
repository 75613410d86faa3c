"""One way to read rows of a split: `SplitRows`, cached in memory or read from the source.

A split the pipeline serves ("train", "validation", "test") is a view of a TFDS
random-access source: `indices` maps positions 0..N-1 to source indices, so a seeded
hold-out of the train split (`validation_holdout`) is just two disjoint views of one
source. Every batch producer in crossjax.data reads through `SplitRows.read`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from crossjax.data.preprocess import Preprocessor, collate
from crossjax.errors import ConfigError

log = logging.getLogger(__name__)


def missing_modality_table(
    num_examples: int, modalities: tuple[str, ...], fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """`present/<m>` (num_examples,) bool for each of `modalities`: round(fraction * N)
    examples, chosen by a Generator seeded with `seed`, each lose ONE modality drawn
    uniformly from `modalities`; every other entry is True. Fixed per example (an
    incomplete dataset, not a per-epoch augmentation)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x4D495353]))
    chosen = rng.permutation(num_examples)[: round(fraction * num_examples)]
    dropped = rng.integers(len(modalities), size=len(chosen))
    table = {f"present/{m}": np.ones(num_examples, bool) for m in modalities}
    for i, m in enumerate(modalities):
        table[f"present/{m}"][chosen[dropped == i]] = False
    return table


def remove_absent(batch: dict[str, np.ndarray], presence: dict[str, np.ndarray]) -> dict:
    """`batch` plus the `present/<m>` (B,) entries of `presence`, with each absent
    modality's values zeroed (text: padding ids and an all-False mask, `captions` too),
    so nothing of an absent modality reaches a model."""
    out = {**batch, **presence}
    for key, present in presence.items():
        m = key.removeprefix("present/")
        extra = ("captions", "captions_mask") if m == "text" else ()
        for k in (m, f"{m}_mask", *extra):
            if k in out:
                keep = present.reshape(-1, *([1] * (out[k].ndim - 1)))
                out[k] = np.where(keep, out[k], np.zeros((), out[k].dtype))
    return out


def validation_holdout(
    num_examples: int,
    fraction: float,
    seed: int,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Sorted (round(fraction * N),) int64 indices of a validation hold-out of N examples.

    With `labels` (N,) each class gives its share (largest remainders settle rounding, so
    the total is exact); without, a plain seeded draw. With `groups` (N,) the draw is over
    groups (round(fraction * number of groups) of them, stratified by the label of each
    group's first example) and every example of a chosen group is held out, so no group
    is on both sides. Depends only on its arguments: the same on every process, every
    resume and every training seed.
    """
    if groups is not None:
        keys, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        chosen = validation_holdout(
            len(keys), fraction, seed, None if labels is None else labels[first]
        )
        return np.flatnonzero(np.isin(inverse, chosen)).astype(np.int64)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ConfigError(f"data.validation_fraction={fraction!r}; valid: a number in (0, 1)")
    size = round(fraction * num_examples)
    if not 0 < size < num_examples:
        raise ConfigError(
            f"data.validation_fraction={fraction!r} holds out {size} of {num_examples} training "
            "examples; choose a fraction that leaves both parts non-empty, or set "
            "data.validation_split"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x56414C]))
    if labels is None:
        return np.sort(rng.permutation(num_examples)[:size]).astype(np.int64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return draw_per_class(rng, inverse, proportional_shares(counts, size))


def proportional_shares(counts: np.ndarray, size: int) -> np.ndarray:
    """(K,) int64 shares of `size` proportional to the class `counts` (K,); the largest
    remainders settle rounding, so they sum to `size` exactly."""
    share = counts * size / counts.sum()
    take = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - take), kind="stable")
    take[order[: size - take.sum()]] += 1
    return take


def draw_per_class(rng: np.random.Generator, classes: np.ndarray, take: np.ndarray) -> np.ndarray:
    """Sorted int64 indices: `take[c]` examples drawn by `rng` among those whose entry of
    `classes` (N,) int is c, for each class c in order."""
    chosen = [rng.permutation(np.flatnonzero(classes == c))[:n] for c, n in enumerate(take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@dataclasses.dataclass
class SplitRows:
    """Preprocessed examples of one split by position: `read(positions)` -> a batch dict of
    (len(positions), ...) arrays. `indices` (N,) maps positions to source indices;
    `presence` ((N,) bool per `present/<m>`) zeroes absent modalities. After `cache()`
    rows are slices of every example preprocessed once (`arrays`)."""

    name: str
    source: Any
    preprocess: Preprocessor
    indices: np.ndarray
    presence: dict[str, np.ndarray] | None = None
    arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def read(
        self, positions: np.ndarray, caption_seeds: list[tuple[int, ...]] | None = None
    ) -> dict[str, np.ndarray]:
        """Rows at `positions` (B,); `caption_seeds` (one per row) seed a drawn caption."""
        positions = np.asarray(positions)
        if self.arrays is not None:
            return {k: v[positions] for k, v in self.arrays.items()}
        seeds = caption_seeds or [None] * len(positions)
        batch = collate(
            [
                self.preprocess(self.source[int(self.indices[p])], seed)
                for p, seed in zip(positions, seeds, strict=True)
            ]
        )
        if self.presence is not None:
            batch = remove_absent(batch, {k: v[positions] for k, v in self.presence.items()})
        return batch

    def nbytes_estimate(self) -> int:
        """Bytes of every row preprocessed, from the first row's size."""
        return sum(v.nbytes for v in self.read(np.zeros(1, np.int64)).values()) * len(self)

    def cache(self) -> None:
        """Preprocesses every row once and keeps them: later reads are array slices."""
        if self.arrays is None:
            log.info("Caching %d preprocessed %s examples in memory", len(self), self.name)
            self.arrays = self.read(np.arange(len(self)))
