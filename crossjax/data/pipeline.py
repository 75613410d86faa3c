"""TFDS data source -> Grain -> numpy batches in the Batch contract.

Every dataset, embedded or from the TFDS catalog, is read through `tfds` as an
array_record random-access source. Training batches come from a seeded shuffle of the
whole split, repeated forever, cut into *global* batches; each process loads only its
slice of every global batch, so the global batch sequence is the same for any process
count. The iterator state is a small JSON dict that the trainer checkpoints.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from crossjax.data.spec import DataSpec
from crossjax.data.text import Vocabulary
from crossjax.errors import ConfigError, CrossjaxError

MODALITIES = ("image", "text", "audio")

# Embedded datasets: name -> module that defines (and so registers) the TFDS builder.
EMBEDDED_BUILDERS = {
    "crossjax_digits": "crossjax.data.digits",
    "crossjax_shapes": "crossjax.data.shapes",
}
# Per-dataset facts the features do not carry (contract key -> feature key, sample rate).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "crossjax_digits": {"sample_rate": 8000},
}


def default_data_dir() -> str:
    """`$CROSSJAX_DATA_DIR`, else TFDS's own default (`~/tensorflow_datasets`)."""
    return os.environ.get("CROSSJAX_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def load_split_sources(name: str, data_dir: str | None, splits: list[str]):
    """Random-access sources for `splits` of TFDS dataset `name` and its DatasetInfo.

    Embedded datasets are generated on first use (array_record, no network) and reused.
    """
    base = name.split("/")[0].split(":")[0]
    if base in EMBEDDED_BUILDERS:
        importlib.import_module(EMBEDDED_BUILDERS[base])
    data_dir = data_dir or default_data_dir()
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"unknown dataset {name!r}; embedded: {', '.join(sorted(EMBEDDED_BUILDERS))}, "
            "or any TFDS catalog name (see tfds.list_builders())"
        ) from None
    except ValueError as e:  # e.g. unknown builder config "crossjax_digits/nope"
        raise ConfigError(f"bad dataset name {name!r}: {e}") from None
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        if base in EMBEDDED_BUILDERS and not _is_prepared(builder):
            logging.info("Generating %s into %s (once; later runs reuse it)", name, data_dir)
        builder.download_and_prepare()
    except ModuleNotFoundError as e:
        if "tensorflow" in str(e):
            raise CrossjaxError(
                f"preparing {name!r} needs TensorFlow: pip install 'crossjax[tf]' "
                "(or prepare it once elsewhere and point data.data_dir at it)"
            ) from None
        raise
    except PermissionError as e:
        raise ConfigError(
            f"cannot write dataset files to {data_dir} ({e}); set data.data_dir"
        ) from None
    available = list(builder.info.splits.keys())
    sources = {}
    for split in splits:
        if available and split not in available:  # (mocked builders list no splits)
            raise ConfigError(
                f"dataset {name!r} has no split {split!r}; it has: {', '.join(available)}"
            )
        sources[split] = builder.as_data_source(split=split)
    return sources, builder.info


def _is_prepared(builder) -> bool:
    try:
        return builder.is_prepared()
    except Exception:  # noqa: BLE001 - older/mocked builders: just prepare.
        return False


@dataclasses.dataclass
class Preprocessor:
    """Maps one TFDS example to one example of the Batch contract (numpy, no batch dim)."""

    features: Mapping[str, str]  # contract key -> dataset feature key
    modalities: tuple[str, ...]
    vocab: Vocabulary | None
    max_text_len: int
    audio_length: int
    extra_features: tuple[str, ...] = ()

    def __call__(self, example: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "image" in self.modalities:
            img = np.asarray(example[self.features["image"]])
            img = (
                img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
            )
            out["image"] = img[..., None] if img.ndim == 2 else img
        if "text" in self.modalities:
            out["text"], out["text_mask"] = self.vocab.encode(
                example[self.features["text"]], self.max_text_len
            )
        if "audio" in self.modalities:
            audio = np.asarray(example[self.features["audio"]])
            if np.issubdtype(audio.dtype, np.integer):
                audio = audio.astype(np.float32) / 32768.0
            audio = audio.astype(np.float32).reshape(-1)
            if self.audio_length:
                audio = np.pad(
                    audio[: self.audio_length], (0, max(0, self.audio_length - audio.size))
                )
            out["audio"] = audio
        if "label" in self.features:
            out["label"] = np.asarray(example[self.features["label"]], np.int32)
        for name in self.extra_features:
            value = np.asarray(example[name])
            out[f"attr/{name}"] = (
                value.astype(np.int32) if np.issubdtype(value.dtype, np.integer) else value
            )
        return out


def collate(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


@dataclasses.dataclass
class _LoadSlice:
    """Grain map: a global batch of indices -> this process's slice of preprocessed examples."""

    source: Any
    preprocess: Preprocessor
    lo: int
    hi: int

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return collate([self.preprocess(self.source[int(i)]) for i in indices[self.lo : self.hi]])


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
        start = int(batch_index) * self.global_batch
        positions = np.arange(start + self.lo, start + self.hi)
        valid = positions < self.num_examples
        examples = [
            self.preprocess(self.source[int(p) if ok else 0])
            for p, ok in zip(positions, valid, strict=True)
        ]
        batch = collate(examples)
        batch["valid"] = valid
        return batch


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
        bad = [m for m in modalities if m not in MODALITIES]
        if bad or not modalities:
            raise ConfigError(
                f"data.modalities={modalities!r}: choose from {', '.join(MODALITIES)}"
            )
        self.sources, self.info = load_split_sources(
            config.name, config.data_dir or None, [config.train_split, config.eval_split]
        )
        base = config.name.split("/")[0]
        defaults = DATASET_DEFAULTS.get(base, {})
        features = dict(defaults.get("features", {}))
        features.update(dict(config.get("features", None) or {}))
        available = set(self.info.features.keys())
        for key in (*modalities, "label"):
            features.setdefault(key, key)
        for m in modalities:
            if features[m] not in available:
                raise ConfigError(
                    f"dataset {config.name!r} has no modality {m!r} (its features: "
                    f"{', '.join(sorted(available))}); set data.modalities to what it has"
                )
        label_key = config.label_key or ""
        if label_key:
            if label_key not in available:
                raise ConfigError(
                    f"dataset {config.name!r} has no label feature {label_key!r} "
                    f"(its features: {', '.join(sorted(available))}); set data.label_key"
                )
            features["label"] = label_key
        else:
            features.pop("label", None)
        self.features = features
        self.modalities = modalities
        self.vocab = self._vocabulary(vocab_path) if "text" in modalities else None
        self.preprocess = Preprocessor(
            features=features,
            modalities=modalities,
            vocab=self.vocab,
            max_text_len=config.max_text_len,
            audio_length=config.get("audio_length", 0) or 0,
            extra_features=self._extra_features(available),
        )
        self.spec = self._spec(defaults)
        self.num_train = len(self.sources[config.train_split])
        self.num_eval = len(self.sources[config.eval_split])
        if self.num_train < batch_size:
            raise ConfigError(
                f"batch_size={batch_size} exceeds the {self.num_train} training examples of {config.name!r}"
            )

    # -- set-up ---------------------------------------------------------------------------
    def _extra_features(self, available: set[str]) -> tuple[str, ...]:
        """`data.extra_features`: dataset features passed through as `attr/<name>`."""
        extra = tuple(self.config.get("extra_features", ()) or ())
        for name in extra:
            if name not in available:
                raise ConfigError(
                    f"data.extra_features names {name!r}, which dataset {self.config.name!r} "
                    f"lacks (its features: {', '.join(sorted(available))})"
                )
        return extra

    def _vocabulary(self, vocab_path) -> Vocabulary:
        if vocab_path is not None and os.path.exists(vocab_path):
            return Vocabulary.load(vocab_path)
        source = self.sources[self.config.train_split]
        key = self.features["text"]
        vocab = Vocabulary.build(
            (source[i][key] for i in range(len(source))),
            min_count=self.config.vocab_min_count,
            max_size=self.config.max_vocab_size or None,
        )
        if vocab_path is not None and jax.process_index() == 0:
            vocab.save(vocab_path)
        return vocab

    def _spec(self, defaults) -> DataSpec:
        example = self.preprocess(self.sources[self.config.train_split][0])
        num_classes = None
        if "label" in self.features:
            feature = self.info.features[self.features["label"]]
            num_classes = getattr(feature, "num_classes", None)
        audio_feature = (
            self.info.features[self.features["audio"]] if "audio" in self.modalities else None
        )
        sample_rate = (
            getattr(audio_feature, "sample_rate", None)
            or self.config.get("sample_rate", 0)
            or defaults.get("sample_rate")
        )
        return DataSpec(
            modalities=self.modalities,
            num_classes=num_classes,
            vocab_size=len(self.vocab) if self.vocab is not None else None,
            max_text_len=self.config.max_text_len if "text" in self.modalities else None,
            image_shape=tuple(example["image"].shape) if "image" in example else None,
            audio_shape=tuple(example["audio"].shape) if "audio" in example else None,
            sample_rate=int(sample_rate) if "audio" in self.modalities and sample_rate else None,
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
    def train_iterator(self, state: dict | None = None) -> grain.DatasetIterator:
        """Endless iterator of this process's training batches; `state` from `get_state()`."""
        indices = (
            grain.MapDataset.range(self.num_train)
            .shuffle(seed=self.seed)
            .repeat(None)
            .batch(self.batch_size, drop_remainder=True)
        )
        lo, hi = self._process_slice(self.batch_size)
        source = self.sources[self.config.train_split]
        ds = indices.map(_LoadSlice(source, self.preprocess, lo, hi))
        it = ds.to_iter_dataset(self._read_options()).__iter__()
        if state:
            it.set_state(state)
        return it

    def eval_batches(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One full pass over the eval split; the last batch is padded and `valid` marks real rows."""
        global_batch = batch_size or self.batch_size
        num_batches = math.ceil(self.num_eval / global_batch)
        lo, hi = self._process_slice(global_batch)
        source = self.sources[self.config.eval_split]
        ds = grain.MapDataset.range(num_batches).map(
            _LoadEvalBatch(source, self.preprocess, self.num_eval, global_batch, lo, hi)
        )
        return iter(ds.to_iter_dataset(self._read_options()))
