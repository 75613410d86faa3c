"""Few labels and unpaired data: which training examples keep their label, which keep all
their modalities.

Both are fixed properties of the training part (an incomplete dataset, not a per-epoch
augmentation), chosen once by their own seeds (`data.label_seed`, `data.pairing_seed`),
independent of the run's seed, and drawn only from the training part (after the
validation hold-out), so validation and test stay complete and fully labelled.

- `labeled_subset`: `data.num_labels` (balanced: the same number per class) or
  `data.labeled_fraction` (stratified by class) -> `present/label` (N,) bool.
- `weak_pairing`: `data.paired_fraction` keeps that fraction of examples whole and turns
  each other one into one single-modality example per modality (the MVAE paper's weak
  supervision) -> a new index view of the training part with its `present/<m>` table.
"""

from __future__ import annotations

import numbers

import ml_collections
import numpy as np

from crossjax.data.rows import draw_per_class, proportional_shares
from crossjax.errors import ConfigError


def label_settings(config: ml_collections.ConfigDict) -> tuple[int | None, float | None]:
    """(`data.num_labels`, `data.labeled_fraction`) checked: at most one set; (None, None)
    when every training example keeps its label (a fraction of 1 counts as unset)."""
    num = config.get("num_labels", None)
    fraction = config.get("labeled_fraction", None)
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise ConfigError(f"data.num_labels={num!r}; valid: a positive integer, or None for all")
    if fraction is not None and (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not 0 < fraction <= 1
    ):
        raise ConfigError(f"data.labeled_fraction={fraction!r}; valid: a number in (0, 1], or None")
    if num is not None and fraction is not None:
        raise ConfigError(
            f"data.num_labels={num} and data.labeled_fraction={fraction} are both set; set one "
            "(the other None)"
        )
    if fraction is not None and fraction == 1:
        fraction = None
    return num, (float(fraction) if fraction is not None else None)


def labeled_subset(
    labels: np.ndarray,
    num_classes: int,
    seed: int,
    *,
    num_labels: int | None = None,
    fraction: float | None = None,
) -> np.ndarray:
    """(N,) bool: the training examples that keep their label.

    `labels` (N,) int are the training part's classes in [0, num_classes). With
    `num_labels`, num_labels / num_classes examples of each class; with `fraction`,
    round(fraction * N) examples, each class its proportional share. Drawn by a Generator
    seeded with `seed` only, so the subset is the same for every run seed and process.
    """
    labels = np.asarray(labels).astype(np.int64)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    if num_labels is not None:
        if num_labels % num_classes:
            raise ConfigError(
                f"data.num_labels={num_labels} is not a multiple of the {num_classes} classes; "
                f"choose a multiple, e.g. {max(1, num_labels // num_classes) * num_classes}"
            )
        per_class = num_labels // num_classes
        short = int(np.argmin(counts))
        if counts[short] < per_class:
            raise ConfigError(
                f"data.num_labels={num_labels} needs {per_class} examples of each class, but "
                f"class {short} has {counts[short]} in the training part; choose at most "
                f"{int(counts[short]) * num_classes}"
            )
        take = np.full(num_classes, per_class, np.int64)
    elif fraction is not None:
        size = round(fraction * len(labels))
        if size < 1:
            raise ConfigError(
                f"data.labeled_fraction={fraction} labels no example of the {len(labels)} in "
                "the training part; choose a larger fraction"
            )
        take = proportional_shares(counts, size)
    else:
        return np.ones(len(labels), bool)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x4C41424C]))
    mask = np.zeros(len(labels), bool)
    mask[draw_per_class(rng, labels, take)] = True
    return mask


def paired_fraction_of(config: ml_collections.ConfigDict, modalities: tuple[str, ...]) -> float:
    """`data.paired_fraction` checked (1.0: every example keeps all its modalities)."""
    fraction = config.get("paired_fraction", 1.0)
    if fraction is None:
        return 1.0
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not 0 <= fraction <= 1
    ):
        raise ConfigError(f"data.paired_fraction={fraction!r}; valid: a number in [0, 1]")
    if fraction < 1 and len(modalities) < 2:
        raise ConfigError(
            f"data.paired_fraction={fraction} needs at least two data.modalities to unpair; "
            f"got {modalities!r}"
        )
    if fraction < 1 and (config.get("missing_fraction", 0.0) or 0.0):
        raise ConfigError(
            "data.paired_fraction and data.missing_fraction both drop modalities; set one "
            "(paired_fraction=1.0 or missing_fraction=0.0)"
        )
    return float(fraction)


def weak_pairing(
    num_examples: int, modalities: tuple[str, ...], fraction: float, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(positions (R,) int64, {present/<m>: (R,) bool}) of a weakly paired training part.

    round(fraction * N) of the N examples, drawn by a Generator seeded with `seed`, stay
    whole (all modalities present); each other example appears once per modality with
    only that modality present, so R = P + (N - P) * len(modalities). `positions` index
    the original training part (a position repeats for the copies of one example).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x50414952]))
    paired = np.zeros(num_examples, bool)
    paired[rng.permutation(num_examples)[: round(fraction * num_examples)]] = True
    whole, split = np.flatnonzero(paired), np.flatnonzero(~paired)
    positions = np.concatenate([whole, *([split] * len(modalities))]).astype(np.int64)
    table = {}
    for i, m in enumerate(modalities):
        copies = [np.full(len(split), i == j) for j in range(len(modalities))]
        table[f"present/{m}"] = np.concatenate([np.ones(len(whole), bool), *copies])
    return positions, table


def labeled_batch_size(size: int | None, batch_size: int, labeled: np.ndarray | None) -> int | None:
    """`data.labeled_batch_size` checked against the batch size and the training part's
    `present/label` (N,) bool (None: fully labelled)."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= batch_size:
        raise ConfigError(
            f"data.labeled_batch_size={size!r}; valid: an integer in [1, batch_size="
            f"{batch_size}], or None for a plain shuffle"
        )
    if labeled is None:
        raise ConfigError(
            "data.labeled_batch_size needs partly labelled data; set data.num_labels or "
            "data.labeled_fraction, or labeled_batch_size=None"
        )
    if size < batch_size and labeled.all():
        raise ConfigError(
            f"data.labeled_batch_size={size} leaves room for unlabelled examples, but all "
            f"{len(labeled)} training examples are labelled; set it to batch_size"
        )
    return size


def paired_batch_size(
    size: int | None, batch_size: int, presence: dict[str, np.ndarray] | None, labelled: bool
) -> int | None:
    """`data.paired_batch_size` checked: None when unset or when every training example is
    complete (`presence`: the training part's `present/<m>` (N,) tables, None: all)."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size < batch_size:
        raise ConfigError(
            f"data.paired_batch_size={size!r}; valid: an integer in [1, batch_size="
            f"{batch_size}), or None for a plain shuffle"
        )
    if labelled:
        raise ConfigError(
            "data.paired_batch_size and data.labeled_batch_size both fix a batch's make-up; "
            "set one (the other None)"
        )
    complete = complete_examples(presence)
    if complete is None or complete.all():
        return None  # every example complete: nothing to balance
    return size


def complete_examples(presence: dict[str, np.ndarray] | None) -> np.ndarray | None:
    """(N,) bool: the training examples with every modality present, from the `present/<m>`
    (N,) tables of `presence` (`present/label` aside); None when there are none."""
    modalities = [v for k, v in (presence or {}).items() if k != "present/label"]
    return np.logical_and.reduce(modalities) if modalities else None
