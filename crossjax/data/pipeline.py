"""TFDS data source -> Grain -> numpy batches in the Batch contract.

Every dataset, embedded, from the TFDS catalog or converted from the user's files
(`data.name = "files"`), is read through `tfds` as an array_record random-access source.
Training batches come from a seeded shuffle of the whole split, repeated forever, cut
into *global* batches; each process loads only its slice of every global batch, so the
global batch sequence is the same for any process count. The iterator state is a small
JSON dict that the trainer checkpoints. Randomness inside an example (which of several
captions) comes from a numpy Generator seeded by (seed, example index, epoch), so it is
reproducible and survives resumption.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from crossjax.data import catalog
from crossjax.data.catalog import (
    DATASET_DEFAULTS,  # noqa: F401 - re-exported: the tables live in catalog
    EMBEDDED_BUILDERS,
    FILES_DATASET,
    MODALITIES,
    is_image_key,
)
from crossjax.data.imaging import IMAGE_MODES
from crossjax.data.preprocess import Preprocessor, collate
from crossjax.data.spec import DataSpec
from crossjax.data.text import Vocabulary
from crossjax.errors import ConfigError, CrossjaxError

log = logging.getLogger(__name__)
__all__ = ["DataPipeline", "Preprocessor", "collate", "default_data_dir", "load_split_sources"]


def default_data_dir() -> str:
    """`$CROSSJAX_DATA_DIR`, else TFDS's own default (`~/tensorflow_datasets`)."""
    return os.environ.get("CROSSJAX_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _is_missing_tensorflow(error: BaseException) -> bool:
    """True for the ModuleNotFoundError of a missing TF (TFDS re-raises it with a prefix)."""
    missing = getattr(error, "name", None) == "tensorflow"
    return missing or "No module named 'tensorflow'" in str(error)


def _needs_tf_error(name: str, what: str) -> CrossjaxError:
    base = catalog.base_name(name)
    why = catalog.NEEDS_TENSORFLOW.get(base, "")
    elsewhere = (
        ""
        if base in catalog.UNREADABLE_WITHOUT_TENSORFLOW
        else " (or prepare it once elsewhere with file_format='array_record' and point "
        "data.data_dir at it)"
    )
    return CrossjaxError(
        f"{what} {name!r} needs TensorFlow{f' ({why})' if why else ''}: "
        f"pip install 'crossjax[tf]'{elsewhere}"
    )


def _make_builder(name: str, data_dir: str):
    try:
        return tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"unknown dataset {name!r}; embedded: {', '.join(sorted(EMBEDDED_BUILDERS))}, "
            f"{FILES_DATASET!r} for your own files (data.source), or any TFDS catalog name "
            "(see tfds.list_builders())"
        ) from None
    except ModuleNotFoundError as e:  # the builder's code needs TF just to be constructed
        if not _is_missing_tensorflow(e):
            raise
        try:  # prepared elsewhere: readable from its files without the builder's code
            return tfds.core.read_only_builder.builder_from_files(name, data_dir=data_dir)
        except Exception:  # noqa: BLE001 - not prepared, or unreadable without TF either
            raise _needs_tf_error(name, "reading dataset") from None
    except ValueError as e:  # e.g. unknown builder config "crossjax_digits/nope"
        raise ConfigError(f"bad dataset name {name!r}: {e}") from None


def load_split_sources(name: str, data_dir: str | None, splits: list[str]):
    """Random-access sources for `splits` of TFDS dataset `name` and its DatasetInfo.

    Embedded datasets are generated on first use (array_record, no network) and reused;
    catalog datasets are downloaded and prepared on first use. Splits may be TFDS split
    expressions ("train[:90%]", "train+test").
    """
    catalog.import_builder_module(name)
    data_dir = data_dir or default_data_dir()
    builder = _make_builder(name, data_dir)
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        if not isinstance(builder, tfds.core.read_only_builder.ReadOnlyBuilder):
            if catalog.base_name(name) in EMBEDDED_BUILDERS and not _is_prepared(builder):
                log.info("Generating %s into %s (once; later runs reuse it)", name, data_dir)
            builder.download_and_prepare()
    except ModuleNotFoundError as e:  # mnist & co. decode their downloads with tf.io
        if _is_missing_tensorflow(e):
            raise _needs_tf_error(name, "preparing dataset") from None
        raise
    except PermissionError as e:
        raise ConfigError(
            f"cannot write dataset files to {data_dir} ({e}); set data.data_dir"
        ) from None
    except OSError as e:  # requests' ConnectionError after TFDS's retries, ...
        if not type(e).__module__.startswith(("requests", "urllib3")):
            raise
        raise CrossjaxError(
            f"cannot download dataset {name!r} ({type(e).__name__}); check the network, or "
            f"prepare it elsewhere and point data.data_dir at a copy of {data_dir}"
        ) from None
    available = list(builder.info.splits.keys())
    sources = {}
    for split in splits:
        names = re.sub(r"\[[^\]]*\]", "", split).split("+")
        missing = [s for s in names if s.strip() not in available]
        if available and missing:  # (mocked builders list no splits)
            raise ConfigError(
                f"dataset {name!r} has no split {missing[0].strip()!r}; it has: "
                f"{', '.join(available)} (slices work too, e.g. 'train[90%:]')"
            )
        try:
            sources[split] = builder.as_data_source(split=split)
        except ValueError as e:  # e.g. a slice past the end: "train[:512]" of 300
            raise ConfigError(f"bad split {split!r} of dataset {name!r}: {e}") from None
    return sources, builder.info


def _is_prepared(builder) -> bool:
    try:
        return builder.is_prepared()
    except Exception:  # noqa: BLE001 - older/mocked builders: just prepare.
        return False


@dataclasses.dataclass
class _LoadSlice:
    """Grain map: (batch number, global batch of indices) -> this process's slice of
    preprocessed examples."""

    source: Any
    preprocess: Preprocessor
    lo: int
    hi: int
    seed: int
    num_examples: int
    presence: dict[str, np.ndarray] | None = None  # `present/<m>` per example of the split

    def __call__(self, batch_number: int, indices: np.ndarray) -> dict[str, np.ndarray]:
        examples = []
        for j in range(self.lo, self.hi):
            index = int(indices[j])
            caption_seed = None
            if self.preprocess.draws_captions:  # (seed, example, epoch): same on resume
                epoch = (int(batch_number) * len(indices) + j) // self.num_examples
                caption_seed = (self.seed, index, epoch)
            examples.append(self.preprocess(self.source[index], caption_seed))
        batch = collate(examples)
        if self.presence is not None:
            rows = np.asarray(indices[self.lo : self.hi])
            batch = remove_absent(batch, {k: v[rows] for k, v in self.presence.items()})
        return batch


_ENDLESS = 2**62  # batches in the "endless" training stream


@dataclasses.dataclass(frozen=True)
class ShuffledBatchIndices:
    """Batch j -> example indices (batch_size,) int64 of an endless shuffled stream.

    Epoch e is the permutation `np.random.default_rng((seed, e)).permutation(n)`; the
    concatenated epochs are cut into consecutive batches, so a batch may straddle two
    epochs and no example is dropped. Vectorised: a batch costs microseconds, where
    Grain's per-element `shuffle` cost ~1 ms per batch of 128, a third of a small model's
    step on CPU.
    """

    num_examples: int
    batch_size: int
    seed: int

    def __call__(self, batch_index: int) -> np.ndarray:
        n = self.num_examples
        start = int(batch_index) * self.batch_size
        stop = start + self.batch_size
        parts = []
        for epoch in range(start // n, (stop - 1) // n + 1):
            lo, hi = max(start - epoch * n, 0), min(stop - epoch * n, n)
            parts.append(_epoch_permutation(n, self.seed, epoch)[lo:hi])
        return np.concatenate(parts)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


class _IndexStream:
    """`ShuffledBatchIndices` read in order, with Grain's iterator state format
    ({"next_index": j}), so checkpoints move between the device and host paths."""

    def __init__(self, batches: ShuffledBatchIndices, state: dict | None):
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


class GatherBatch(NamedTuple):
    """A training batch still to be taken from device-resident arrays: `take(mesh)` inside
    the jitted train step gathers the rows (one dispatch per step, not two)."""

    arrays: dict[str, jax.Array]  # the cached split, replicated on the devices
    indices: np.ndarray  # (B,) int32 rows of this batch

    def take(self, mesh) -> dict[str, jax.Array]:
        from crossjax.sharding import batch_sharding

        batch = {k: v[self.indices] for k, v in self.arrays.items()}
        return jax.lax.with_sharding_constraint(batch, batch_sharding(mesh))


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


def _eval_positions(batch_index: int, global_batch: int, lo: int, hi: int, num_examples: int):
    """This process's example positions in eval batch `batch_index` and which are real;
    padding rows point at example 0."""
    start = int(batch_index) * global_batch
    positions = np.arange(start + lo, start + hi)
    valid = positions < num_examples
    return np.where(valid, positions, 0), valid


@dataclasses.dataclass
class _LoadEvalBatch:
    """Grain map: eval batch number -> this process's slice, padded, with a `valid` mask."""

    source: Any
    preprocess: Preprocessor
    num_examples: int
    global_batch: int
    lo: int
    hi: int

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        rows, valid = _eval_positions(
            batch_index, self.global_batch, self.lo, self.hi, self.num_examples
        )
        batch = collate([self.preprocess(self.source[int(r)]) for r in rows])
        batch["valid"] = valid
        return batch


@dataclasses.dataclass
class _CachedSlice:
    """Grain map over a cached split: global batch of indices -> this process's slice."""

    arrays: dict[str, np.ndarray]
    lo: int
    hi: int

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.asarray(indices[self.lo : self.hi])
        return {k: v[rows] for k, v in self.arrays.items()}


@dataclasses.dataclass
class _CachedEvalBatch:
    """Grain map over a cached split: eval batch number -> padded slice with `valid`."""

    arrays: dict[str, np.ndarray]
    num_examples: int
    global_batch: int
    lo: int
    hi: int

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        rows, valid = _eval_positions(
            batch_index, self.global_batch, self.lo, self.hi, self.num_examples
        )
        batch = {k: v[rows] for k, v in self.arrays.items()}
        batch["valid"] = valid
        return batch


class _HostBatches:
    """Host batches from a Grain iterator, placed on the mesh one by one."""

    def __init__(self, iterator, mesh):
        self._it, self._mesh = iterator, mesh

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, jax.Array]:
        from crossjax.sharding import to_global  # local: the data layer stays JAX-light

        return to_global(next(self._it), self._mesh)

    def get_state(self) -> dict:
        return self._it.get_state()


class _DeviceBatches:
    """Batches gathered on the devices from device-resident cached arrays; with
    `lazy=True` they come as `GatherBatch`es for the train step to take itself."""

    def __init__(self, arrays: dict[str, np.ndarray], indices: _IndexStream, mesh, lazy: bool):
        from crossjax.sharding import replicated

        self._arrays = jax.device_put(arrays, replicated(mesh))
        self._it = indices
        self._mesh = mesh
        self._lazy = lazy
        self._gather = jax.jit(lambda b: b.take(mesh))

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, jax.Array] | GatherBatch:
        batch = GatherBatch(self._arrays, np.asarray(next(self._it), np.int32))
        return batch if self._lazy else self._gather(batch)

    def get_state(self) -> dict:
        return self._it.get_state()


class DataPipeline:
    """Train and eval batches of one dataset for one run, plus the DataSpec models need.

    `config` is the `data` section of an experiment config; `vocab_path` is where the word
    vocabulary of the training split is stored with the run (read if it exists).
    """

    def __init__(self, config, *, batch_size: int, seed: int, vocab_path: str | os.PathLike | None):
        self.config = config
        self.batch_size = batch_size
        self.seed = seed
        modalities = tuple(config.modalities)
        bad = [m for m in modalities if not catalog.is_modality(m)]
        if bad or not modalities:
            raise ConfigError(
                f"data.modalities={modalities!r}: choose from {', '.join(MODALITIES)} "
                "(or image_<view> for a dataset's further image views)"
            )
        splits = [config.train_split, config.eval_split]
        data_dir = config.data_dir or None
        if catalog.base_name(config.name) == FILES_DATASET:
            from crossjax.data.files import load_files_sources  # local: Pillow, wave, ...

            self.sources, self.info = load_files_sources(
                config, data_dir or default_data_dir(), splits
            )
        else:
            self.sources, self.info = load_split_sources(config.name, data_dir, splits)
        self.modalities = modalities
        self.features = self._feature_map()
        self.vocab = self._vocabulary(vocab_path) if "text" in modalities else None
        self.preprocess = Preprocessor(
            features=self.features,
            modalities=modalities,
            vocab=self.vocab,
            max_text_len=config.max_text_len,
            audio_length=config.get("audio_length", 0) or 0,
            extra_features=self._extra_features(),
            image_size=self._image_size(),
            image_mode=self._image_mode(),
            all_captions=int(config.get("all_captions", 0) or 0),
        )
        self.spec = self._spec()
        self.num_train = len(self.sources[config.train_split])
        self.num_eval = len(self.sources[config.eval_split])
        if self.num_train < batch_size:
            raise ConfigError(
                f"batch_size={batch_size} exceeds the {self.num_train} training examples of {config.name!r}"
            )
        self.presence = self._missing_modalities()
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        for split in dict.fromkeys(splits):
            if self._should_cache(split):
                self._cache[split] = self._preprocess_all(split)
        train = config.train_split
        if self.presence is not None and train in self._cache:
            self._cache[train] = remove_absent(self._cache[train], self.presence)

    # -- in-memory cache ------------------------------------------------------------------
    def _should_cache(self, split: str) -> bool:
        """`data.cache`: "auto" keeps a preprocessed split in memory when it is small enough
        (`data.cache_max_mb`); "always"/"never" force it. Splits whose examples draw a
        random caption are never cached (the draw differs per epoch)."""
        mode = self.config.get("cache", "auto")
        if mode not in ("auto", "always", "never"):
            raise ConfigError(f"data.cache={mode!r}; valid: auto, always, never")
        if mode == "never" or self._several_captions():
            return False
        if mode == "always":
            return True
        example = self.preprocess(self.sources[split][0])
        size = sum(v.nbytes for v in example.values()) * len(self.sources[split])
        return size <= self.config.get("cache_max_mb", 2048) * 2**20

    def _several_captions(self) -> bool:
        """Whether an example's text is a sequence of captions (one is drawn per epoch)."""
        if "text" not in self.modalities:
            return False
        feature = catalog.find_feature(self.info.features, self.features["text"])
        return isinstance(feature, tfds.features.Sequence) or getattr(feature, "shape", ()) != ()

    def _preprocess_all(self, split: str) -> dict[str, np.ndarray]:
        """Every example of `split` preprocessed once, stacked: batches become array slices."""
        source = self.sources[split]
        log.info(
            "Caching %d preprocessed %s examples of %s in memory",
            len(source),
            split,
            self.config.name,
        )
        return collate([self.preprocess(source[i]) for i in range(len(source))])

    # -- set-up ---------------------------------------------------------------------------
    def _missing_modalities(self) -> dict[str, np.ndarray] | None:
        """`data.missing_fraction` > 0: the training split's `present/<m>` table (see
        `missing_modality_table`) over `data.missing_modalities` (default: all); else None."""
        fraction = self.config.get("missing_fraction", 0.0) or 0.0
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 <= fraction <= 1
        ):
            raise ConfigError(f"data.missing_fraction={fraction!r}; valid: a number in [0, 1]")
        if not fraction:
            return None
        candidates = tuple(self.config.get("missing_modalities", ()) or self.modalities)
        unknown = [m for m in candidates if m not in self.modalities]
        if unknown:
            raise ConfigError(
                f"data.missing_modalities names {unknown[0]!r}, which is not in "
                f"data.modalities={self.modalities!r}"
            )
        if len(self.modalities) < 2:
            raise ConfigError(
                "data.missing_fraction > 0 needs at least two data.modalities: an example "
                "without its only modality would be empty"
            )
        table = missing_modality_table(
            self.num_train, candidates, float(fraction), int(self.config.get("missing_seed", 0))
        )
        for m in self.modalities:  # modalities never dropped are present everywhere
            table.setdefault(f"present/{m}", np.ones(self.num_train, bool))
        return table

    def _has_feature(self, path: str) -> bool:
        return catalog.find_feature(self.info.features, path) is not None

    def _feature_map(self) -> dict[str, str]:
        config = self.config
        features = catalog.feature_map(
            config.name, config.get("features", None), (*self.modalities, "label")
        )
        available = ", ".join(catalog.feature_names(self.info.features))
        for m in self.modalities:
            if not self._has_feature(features[m]):
                raise ConfigError(
                    f"dataset {config.name!r} has no modality {m!r} (its features: "
                    f"{available}); set data.modalities to what it has, or map it with "
                    f"data.features"
                )
        label_key = config.label_key or ""
        if label_key:
            if not self._has_feature(label_key):
                raise ConfigError(
                    f"dataset {config.name!r} has no label feature {label_key!r} "
                    f"(its features: {available}); set data.label_key ('' for none)"
                )
            features["label"] = label_key
        else:
            features.pop("label", None)
        return features

    def _extra_features(self) -> tuple[str, ...]:
        """`data.extra_features`: dataset features passed through as `attr/<name>`."""
        extra = tuple(self.config.get("extra_features", ()) or ())
        for name in extra:
            if not self._has_feature(name):
                raise ConfigError(
                    f"data.extra_features names {name!r}, which dataset {self.config.name!r} "
                    f"lacks (its features: {', '.join(catalog.feature_names(self.info.features))})"
                )
        return extra

    def _image_size(self) -> tuple[int, int] | None:
        size = tuple(self.config.get("image_size", ()) or ())
        if size and (len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size)):
            raise ConfigError(f"data.image_size={size!r}; valid: (height, width) or () to keep")
        return (int(size[0]), int(size[1])) if size else None

    def _image_mode(self) -> str | None:
        mode = self.config.get("image_mode", "") or ""
        if mode and mode not in IMAGE_MODES:
            raise ConfigError(f"data.image_mode={mode!r}; valid: {', '.join(IMAGE_MODES)} or ''")
        return mode or None

    def _vocabulary(self, vocab_path) -> Vocabulary:
        if vocab_path is not None and os.path.exists(vocab_path):
            return Vocabulary.load(vocab_path)
        source = self.sources[self.config.train_split]
        preprocess = Preprocessor(self.features, ("text",), None, 0, 0)
        vocab = Vocabulary.build(
            (c for i in range(len(source)) for c in preprocess.captions_of(source[i])),
            min_count=self.config.vocab_min_count,
            max_size=self.config.max_vocab_size or None,
        )
        if vocab_path is not None and jax.process_index() == 0:
            vocab.save(vocab_path)
        return vocab

    def _check_fixed_shapes(self) -> None:
        """Varying image sizes need data.image_size; varying audio lengths data.audio_length."""
        for key in self.modalities:
            feature = catalog.find_feature(self.info.features, self.features[key])
            shape = tuple(getattr(feature, "shape", ()) or ())
            if is_image_key(key) and None in shape[:2] and not self.preprocess.image_size:
                raise ConfigError(
                    f"dataset {self.config.name!r} has {key} of varying size; set "
                    "data.image_size, e.g. (64, 64)"
                )
            if key == "audio" and None in shape and not self.preprocess.audio_length:
                raise ConfigError(
                    f"dataset {self.config.name!r} has audio of varying length; set "
                    "data.audio_length (samples to crop/pad to), e.g. 8000"
                )

    def _spec(self) -> DataSpec:
        self._check_fixed_shapes()
        example = self.preprocess(self.sources[self.config.train_split][0])
        num_classes = None
        if "label" in self.features:
            feature = catalog.find_feature(self.info.features, self.features["label"])
            num_classes = getattr(feature, "num_classes", None)
        sample_rate = None
        if "audio" in self.modalities:
            feature = catalog.find_feature(self.info.features, self.features["audio"])
            metadata = getattr(self.info, "metadata", None) or {}
            sample_rate = (
                getattr(feature, "sample_rate", None)
                or self.config.get("sample_rate", 0)
                or catalog.default_sample_rate(self.config.name)
                or metadata.get("sample_rate")
            )
        return DataSpec(
            modalities=self.modalities,
            num_classes=num_classes,
            vocab_size=len(self.vocab) if self.vocab is not None else None,
            max_text_len=self.config.max_text_len if "text" in self.modalities else None,
            image_shape=tuple(example["image"].shape) if "image" in example else None,
            audio_shape=tuple(example["audio"].shape) if "audio" in example else None,
            sample_rate=int(sample_rate) if sample_rate else None,
        )

    def _process_slice(self, global_batch: int) -> tuple[int, int]:
        local = global_batch // jax.process_count()
        lo = jax.process_index() * local
        return lo, lo + local

    def _read_options(self) -> grain.ReadOptions:
        return grain.ReadOptions(
            num_threads=self.config.num_threads, prefetch_buffer_size=self.config.prefetch
        )

    # -- iterators ------------------------------------------------------------------------
    def _batch_indices(self) -> ShuffledBatchIndices:
        return ShuffledBatchIndices(self.num_train, self.batch_size, self.seed)

    def train_iterator(self, state: dict | None = None) -> grain.DatasetIterator:
        """Endless iterator of this process's training batches; `state` from `get_state()`."""
        indices = grain.MapDataset.range(_ENDLESS).map(self._batch_indices())
        lo, hi = self._process_slice(self.batch_size)
        split = self.config.train_split
        if split in self._cache:
            ds = indices.map(_CachedSlice(self._cache[split], lo, hi))
        else:
            load = _LoadSlice(
                self.sources[split],
                self.preprocess,
                lo,
                hi,
                self.seed,
                self.num_train,
                self.presence,
            )
            ds = indices.map_with_index(load)
        it = ds.to_iter_dataset(self._read_options()).__iter__()
        if state:
            it.set_state(state)
        return it

    def global_train_batches(self, mesh, state: dict | None = None, *, lazy: bool = False):
        """Endless global training batches (jax.Arrays sharded over the mesh's data axis);
        `get_state()` gives the iterator state to checkpoint.

        When the training split is cached, one process runs, and `data.device_cache` is
        on, the cached arrays live on the devices and each batch is gathered there from
        the shuffled indices: no per-step host copies (on a 2-core CPU those competed
        with the train step). Same batches, same iterator state as the host path. With
        `lazy=True` such batches come as `GatherBatch`es (the trainer's train step takes
        them itself); otherwise always as dicts.
        """
        split = self.config.train_split
        if (
            split in self._cache
            and jax.process_count() == 1
            and self.config.get("device_cache", True)
        ):
            stream = _IndexStream(self._batch_indices(), state)
            return _DeviceBatches(self._cache[split], stream, mesh, lazy)
        return _HostBatches(self.train_iterator(state), mesh)

    @property
    def num_examples(self) -> dict[str, int]:  # TEMPORARY until the validation split lands
        return {"train": self.num_train, "validation": self.num_eval, "test": self.num_eval}

    def eval_batches(
        self, batch_size: int | None = None, split: str = "validation"
    ) -> Iterator[dict[str, np.ndarray]]:
        """One full pass over the eval split; the last batch is padded and `valid` marks real rows."""
        global_batch = batch_size or self.batch_size
        num_batches = math.ceil(self.num_eval / global_batch)
        lo, hi = self._process_slice(global_batch)
        split = self.config.eval_split  # TEMPORARY
        if split in self._cache:
            load = _CachedEvalBatch(self._cache[split], self.num_eval, global_batch, lo, hi)
        else:
            load = _LoadEvalBatch(
                self.sources[split], self.preprocess, self.num_eval, global_batch, lo, hi
            )
        ds = grain.MapDataset.range(num_batches).map(load)
        return iter(ds.to_iter_dataset(self._read_options()))
