"""TFDS data source -> Grain -> numpy batches in the Batch contract.

Every dataset, embedded, from the TFDS catalog or converted from the user's files
(`data.name = "files"`), is read through `tfds` as an array_record random-access source.
Each dataset has three parts: train, validation (the dataset's own split, or a seeded
hold-out of train that training never sees) and test, each read through one `SplitRows`
(crossjax.data.rows). Training batches come from a seeded shuffle of the train part,
repeated forever, cut into *global* batches; each process loads only its slice of every global batch, so the
global batch sequence is the same for any process count. The iterator state is a small
JSON dict that the trainer checkpoints. Randomness inside an example (which of several
captions) comes from a numpy Generator seeded by (seed, example index, epoch), so it is
reproducible and survives resumption.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from crossjax.config import check_data_config
from crossjax.data import catalog
from crossjax.data.batches import (
    ENDLESS,
    DeviceGather,
    EvalBatch,
    GlobalBatches,
    IndexStream,
    LabeledBatchIndices,
    ShuffledBatchIndices,
    TrainSlice,
)
from crossjax.data.catalog import (
    DATASET_DEFAULTS,  # noqa: F401 - re-exported: the tables live in catalog
    MODALITIES,
    is_image_key,
    read_feature,
)
from crossjax.data.imaging import IMAGE_MODES, channels_of
from crossjax.data.labels import (
    complete_examples,
    label_settings,
    labeled_batch_size,
    labeled_subset,
    paired_batch_size,
    paired_fraction_of,
    weak_pairing,
)
from crossjax.data.preprocess import Preprocessor, collate, image_normalization
from crossjax.data.rows import (
    SplitRows,
    missing_modality_table,
    remove_absent,  # noqa: F401 - re-exported
    validation_holdout,
)
from crossjax.data.spec import DataSpec
from crossjax.data.text import Vocabulary
from crossjax.data.tfds_source import default_data_dir, load_split_sources
from crossjax.data.tokenizers import TextTokenizer, load_tokenizer, tokenizer_kind
from crossjax.errors import ConfigError

log = logging.getLogger(__name__)
# Decoded train examples kept in memory while the run caches its rows: decoding (TFDS
# deserialisation) costs more than preprocessing, and the set-up pass has just done it.
DECODED_MAX_MB = 256

__all__ = ["DataPipeline", "Preprocessor", "collate", "default_data_dir", "load_split_sources"]


class DecodedExamples:
    """A split's decoded examples held in memory, read like its data source (len, [i]).
    Its repr stays one line: Grain prints the map functions that hold it."""

    def __init__(self, examples: list):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int):
        return self.examples[index]

    def __repr__(self) -> str:
        return f"DecodedExamples({len(self.examples)} examples)"


class DataPipeline:
    """Train, validation and test batches of one dataset for one run, plus the DataSpec
    models need.

    The validation split is `data.validation_split` where the dataset has one, else a
    seeded hold-out of the train split (`data.validation_fraction`, stratified by label,
    seeded by `data.validation_seed`) that the training stream never yields. Splits are
    preprocessed into memory (see `_should_cache`) on their first read only.
    `config` is the `data` section of an experiment config; `vocab_path` is where the word
    vocabulary of the training examples is stored with the run (read if it exists); with
    `data.tokenizer` set, texts are tokenised by that instead (nothing is stored).
    """

    def __init__(self, config, *, batch_size: int, seed: int, vocab_path: str | os.PathLike | None):
        check_data_config(config)
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
        validation = config.get("validation_split", None) or None
        if validation is not None and validation == config.train_split:
            raise ConfigError(
                f"data.validation_split={validation!r} is the training split; name a split "
                "the dataset keeps apart, or None to hold out data.validation_fraction of it"
            )
        train, test = config.train_split, config.test_split
        local_splits = tuple((config.get("source", None) or {}).get("splits", ()) or ())
        if catalog.reads_local_files(config) and local_splits:
            if len(local_splits) != 2 or not all(isinstance(n, str) and n for n in local_splits):
                raise ConfigError(
                    f"data.source.splits={local_splits!r}; valid: (train split, test split) "
                    "names of the converted source, e.g. ('train', 'test'), or ()"
                )
            train, test = local_splits  # data.source.splits: the local copy's own
        self.split_names = {"train": train, "validation": validation or train, "test": test}
        splits = list(dict.fromkeys(self.split_names.values()))
        data_dir = config.data_dir or None
        if catalog.reads_local_files(config):
            from crossjax.data.files import load_files_sources  # local: Pillow, wave, ...

            self.sources, self.info = load_files_sources(
                config, data_dir or default_data_dir(), splits
            )
        else:
            builder_config = None
            if config.get("pairing_sources", None):  # a pairing of local MNIST/FSDD files
                from crossjax.data.pairings import local_builder_config

                builder_config = local_builder_config(config.name, config.pairing_sources)
            self.sources, self.info = load_split_sources(
                config.name, data_dir, splits, builder_config
            )
        self.modalities = modalities
        self.features = self._feature_map()
        self._label_values: np.ndarray | None = None
        # A pretrained tokenizer needs no training text: with it, image-only data still has
        # a vocabulary (zero-shot prompts of a two tower on a labelled image folder).
        pretrained_tokenizer = tokenizer_kind(config.get("tokenizer", None)) != ""
        text = "text" in modalities or pretrained_tokenizer
        builds_vocab = (
            "text" in modalities
            and not pretrained_tokenizer
            and not (vocab_path is not None and os.path.exists(vocab_path))
        )
        self._train_pass_wants = (
            tuple(p for p in (self.features.get("label"), self._validation_group()) if p),
            builds_vocab,
        )
        self._train_pass_result: tuple[dict[str, np.ndarray | None], list] | None = None
        self.row_indices = self._row_indices(held_out=validation is None)
        self.num_examples = {k: len(v) for k, v in self.row_indices.items()}
        self.num_train = self.num_examples["train"]
        self.vocab = self._vocabulary(vocab_path) if text else None
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
            **self._image_normalization(),
        )
        self.spec = self._spec()
        self.presence = self._incomplete_training_part()
        if self.num_train < batch_size:
            raise ConfigError(
                f"batch_size={batch_size} exceeds the {self.num_train} training examples of {config.name!r}"
            )
        self.labeled_batch_size = labeled_batch_size(
            config.get("labeled_batch_size", None),
            batch_size,
            (self.presence or {}).get("present/label"),
        )
        self.paired_batch_size = paired_batch_size(
            config.get("paired_batch_size", None),
            batch_size,
            self.presence,
            self.labeled_batch_size is not None,
        )
        self._rows: dict[str, SplitRows] = {}

    # -- splits ---------------------------------------------------------------------------
    def _row_indices(self, held_out: bool) -> dict[str, np.ndarray]:
        """Source indices of each part; with `held_out`, validation is a stratified
        hold-out of the train split and train is the rest (disjoint, sorted)."""
        sizes = {part: len(self.sources[split]) for part, split in self.split_names.items()}
        indices = {part: np.arange(n, dtype=np.int64) for part, n in sizes.items()}
        if held_out:
            fraction = self.config.get("validation_fraction", 0.1)
            seed = int(self.config.get("validation_seed", 0) or 0)
            holdout = validation_holdout(
                sizes["train"],
                fraction,
                seed,
                self._train_labels(),
                self._train_feature(self._validation_group()),
            )
            indices["validation"] = holdout
            indices["train"] = np.setdiff1d(indices["train"], holdout)
        return indices

    def _validation_group(self) -> str | None:
        group = self.config.get("validation_group", None)
        if group is None:
            group = catalog.default_validation_group(self.config.name)
        return group or None

    def _train_pass(self) -> tuple[dict[str, np.ndarray | None], list]:
        """One read of the whole train split for everything set-up needs from every
        example: the scalar features of `_train_feature` (labels to stratify the hold-out
        by, groups to keep together; None for a path the examples lack) and, when the run
        builds its word vocabulary, each example's captions. Decoding an example costs
        more than using it, so each is decoded once here, not once per use."""
        if self._train_pass_result is None:
            paths, captions_wanted = self._train_pass_wants
            source = self.sources[self.split_names["train"]]
            preprocess = Preprocessor(self.features, ("text",), None, 0, 0)
            values: dict[str, list | None] = {p: [] for p in paths}
            captions = []
            kept = [] if (paths or captions_wanted) and self._keep_decoded(source) else None
            if paths or captions_wanted:
                for i in range(len(source)):
                    example = source[i]
                    if kept is not None:
                        kept.append(example)
                    for path, column in values.items():
                        if column is None:
                            continue
                        try:
                            column.append(np.asarray(read_feature(example, path)))
                        except KeyError:
                            values[path] = None
                    if captions_wanted:
                        captions.append(preprocess.captions_of(example))
            arrays = {p: None if v is None else np.asarray(v) for p, v in values.items()}
            self._train_pass_result = arrays, captions
            if kept is not None:  # the train (and held-out validation) rows read these
                self.sources[self.split_names["train"]] = DecodedExamples(kept)
        return self._train_pass_result

    def _keep_decoded(self, source) -> bool:
        """Whether `_train_pass` keeps the decoded train examples for the in-memory cache
        of the rows to read (instead of decoding each again): where those rows are cached
        anyway and the decoded split is small (DECODED_MAX_MB, estimated from its first
        example)."""
        if self.config.get("cache", "auto") == "never" or not len(source):
            return False

        def nbytes(leaf) -> int:
            return len(leaf) if isinstance(leaf, bytes | str) else np.asarray(leaf).nbytes

        size = sum(nbytes(leaf) for leaf in jax.tree.leaves(source[0]))
        return size * len(source) <= DECODED_MAX_MB * 2**20

    def _train_feature(self, path: str | None) -> np.ndarray | None:
        """(N,) values of a scalar feature over the train split (labels to stratify the
        hold-out by, groups to keep together); None without the feature (read in the one
        pass of `_train_pass`)."""
        if not path:
            return None
        values, _ = self._train_pass()
        if path not in values:  # not asked for at construction: read it on its own
            source = self.sources[self.split_names["train"]]
            try:
                values[path] = np.asarray(
                    [np.asarray(read_feature(source[i], path)) for i in range(len(source))]
                )
            except KeyError:
                values[path] = None
        if values[path] is None:
            raise ConfigError(
                f"data.validation_group={path!r} is not a feature of {self.config.name!r}"
            )
        return values[path] if values[path].ndim == 1 else None

    def _train_labels(self) -> np.ndarray | None:
        """(N,) labels of the whole train split (read once), None without a label feature."""
        if self._label_values is None:
            self._label_values = self._train_feature(self.features.get("label"))
        return self._label_values

    def rows(self, part: str) -> SplitRows:
        """The rows of `part` ("train", "validation", "test"), made (and cached in memory
        where `_should_cache` says so) on first use."""
        if part not in self.split_names:
            raise ValueError(f"unknown split {part!r}; valid: {', '.join(self.split_names)}")
        if part not in self._rows:
            rows = SplitRows(
                name=f"{part} ({self.split_names[part]}) of {self.config.name}",
                source=self.sources[self.split_names[part]],
                preprocess=self.preprocess,
                indices=self.row_indices[part],
                presence=self.presence if part == "train" else None,
            )
            if self._should_cache(rows):
                rows.cache()
            self._rows[part] = rows
        return self._rows[part]

    # -- in-memory cache ------------------------------------------------------------------
    def _should_cache(self, rows: SplitRows) -> bool:
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
        return rows.nbytes_estimate() <= self.config.get("cache_max_mb", 2048) * 2**20

    def _several_captions(self) -> bool:
        """Whether an example's text is a sequence of captions (one is drawn per epoch)."""
        if "text" not in self.modalities:
            return False
        feature = catalog.find_feature(self.info.features, self.features["text"])
        return isinstance(feature, tfds.features.Sequence) or getattr(feature, "shape", ()) != ()

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

    def _incomplete_training_part(self) -> dict[str, np.ndarray] | None:
        """The training part's `present/<m>` and `present/label` (N,) bool tables, None
        when it is complete and fully labelled. `data.num_labels`/`labeled_fraction` pick
        the labelled examples (crossjax.data.labels); `data.paired_fraction` < 1 re-views
        the training part (one copy per modality of each unpaired example), after the
        labels are drawn, so an example's copies share its labelled state."""
        presence = self._missing_modalities()
        num_labels, fraction = label_settings(self.config)
        labeled = None
        if num_labels is not None or fraction is not None:
            labels = self._train_labels() if "label" in self.features else None
            if labels is None:
                raise ConfigError(
                    f"data.num_labels/labeled_fraction need a label feature, and "
                    f"{self.config.name!r} has none here; set data.label_key or unset them"
                )
            labels = labels[self.row_indices["train"]]
            num_classes = self.spec.num_classes or int(labels.max()) + 1
            seed = int(self.config.get("label_seed", 0) or 0)
            labeled = labeled_subset(
                labels, num_classes, seed, num_labels=num_labels, fraction=fraction
            )
        paired = paired_fraction_of(self.config, self.modalities)
        if paired < 1:
            seed = int(self.config.get("pairing_seed", 0) or 0)
            positions, presence = weak_pairing(self.num_train, self.modalities, paired, seed)
            self.row_indices["train"] = self.row_indices["train"][positions]
            self.num_examples["train"] = self.num_train = len(positions)
            labeled = labeled[positions] if labeled is not None else None
        if labeled is not None:
            presence = {**(presence or {}), "present/label": labeled}
        return presence

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

    def _image_normalization(self) -> dict[str, tuple[float, ...]]:
        mean, std = image_normalization(
            self.config.get("image_mean", ()), self.config.get("image_std", ())
        )
        return {"image_mean": mean, "image_std": std}

    def _image_mode(self) -> str | None:
        mode = self.config.get("image_mode", "") or ""
        if mode and mode not in IMAGE_MODES:
            raise ConfigError(f"data.image_mode={mode!r}; valid: {', '.join(IMAGE_MODES)} or ''")
        return mode or None

    def _vocabulary(self, vocab_path) -> TextTokenizer:
        """The run's tokenizer: `data.tokenizer`'s, else the word vocabulary of the
        training examples (read from `vocab_path` where it exists, else built and saved)."""
        tokenizer = load_tokenizer(self.config.get("tokenizer", None))
        if tokenizer is not None:
            return tokenizer
        if vocab_path is not None and os.path.exists(vocab_path):
            return Vocabulary.load(vocab_path)
        _, captions = self._train_pass()  # every train example's, in source order
        vocab = Vocabulary.build(  # from the examples trained on: none held out
            (c for i in self.row_indices["train"] for c in captions[int(i)]),
            min_count=self.config.vocab_min_count,
            max_size=self.config.max_vocab_size or None,
        )
        if vocab_path is not None and jax.process_index() == 0:
            vocab.save(vocab_path)
        return vocab

    def _check_fixed_shapes(self) -> None:
        """Varying image sizes need data.image_size; varying audio lengths data.audio_length.
        Logs one line where data.image_size / image_mode resize or recolour fixed-size images."""
        for key in self.modalities:
            feature = catalog.find_feature(self.info.features, self.features[key])
            shape = tuple(getattr(feature, "shape", ()) or ())
            if is_image_key(key) and len(shape) == 3 and None not in shape:
                mode, size = self.preprocess.image_mode, self.preprocess.image_size
                fitted = (*(size or shape[:2]), channels_of(mode) if mode else shape[2])
                if fitted != shape:
                    log.info(
                        "data.image_size/image_mode fit %s's %dx%dx%d %s to %dx%dx%d (set them "
                        "to () and '' to keep the dataset's own)",
                        self.config.name, *shape, key, *fitted,
                    )  # fmt: skip
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
        example = self.preprocess(
            self.sources[self.split_names["train"]][int(self.row_indices["train"][0])]
        )
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
            max_text_len=self.config.max_text_len if self.vocab is not None else None,
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
    def _batch_indices(self) -> ShuffledBatchIndices | LabeledBatchIndices:
        """Batch j -> training positions: a plain shuffle, or `data.labeled_batch_size`
        labelled ones from the labelled pool plus the rest from the unlabelled pool (only
        the unlabelled examples, so every batch holds exactly that many labelled rows), or
        likewise `data.paired_batch_size` complete examples plus incomplete ones."""
        if self.labeled_batch_size:
            fixed, size = self.presence["present/label"], self.labeled_batch_size
        elif self.paired_batch_size:  # complete examples are the fixed part of each batch
            fixed, size = complete_examples(self.presence), self.paired_batch_size
        else:
            return ShuffledBatchIndices(self.num_train, self.batch_size, self.seed)
        return LabeledBatchIndices(
            np.flatnonzero(fixed), np.flatnonzero(~fixed), self.batch_size, size, self.seed
        )

    def train_iterator(self, state: dict | None = None) -> grain.DatasetIterator:
        """Endless iterator of this process's training batches (host numpy dicts of
        (batch_size / processes, ...) arrays); `state` from `get_state()`."""
        lo, hi = self._process_slice(self.batch_size)
        load = TrainSlice(self.rows("train"), lo, hi, self.seed)
        indices = grain.MapDataset.range(ENDLESS).map(self._batch_indices())
        it = indices.map_with_index(load).to_iter_dataset(self._read_options()).__iter__()
        if state:
            it.set_state(state)
        return it

    def global_train_batches(self, mesh, state: dict | None = None) -> GlobalBatches:
        """Endless global training batches: dicts of jax.Arrays (batch_size, ...) sharded
        over the mesh's data axis; `get_state()` gives the iterator state to checkpoint.

        When the training split is cached, one process runs, and `data.device_cache` is
        on, the cached arrays live on the devices and each batch is gathered there from
        the shuffled positions: no per-step host copies (on a 2-core CPU those competed
        with the train step). Same batches, same iterator state as the host path.
        """
        rows = self.rows("train")
        if (
            rows.arrays is not None
            and jax.process_count() == 1
            and self.config.get("device_cache", True)
        ):
            stream = IndexStream(self._batch_indices(), state)
            return GlobalBatches(stream, DeviceGather(rows.arrays, mesh))
        from crossjax.sharding import to_global  # local: the data layer stays JAX-light

        return GlobalBatches(self.train_iterator(state), lambda b: to_global(b, mesh))

    def batch_keys(self, split: str = "train") -> tuple[str, ...]:
        """The keys of this run's batches of `split`: the preprocessed example's, plus the
        `present/<m>` masks of training with missing modalities (what losses and
        evaluators are checked against before the first step)."""
        keys = self.preprocess.keys
        if split == "train" and self.presence is not None:
            keys = (*keys, *self.presence)
        return keys

    def eval_batches(
        self, batch_size: int | None = None, split: str = "validation"
    ) -> Iterator[dict[str, np.ndarray]]:
        """One pass over `split` ("validation" or "test") as this process's host batches:
        each example once, the last global batch padded; `valid` (B,) bool marks real rows."""
        if split not in ("validation", "test"):
            raise ValueError(f"eval_batches(split={split!r}); valid: 'validation', 'test'")
        global_batch = batch_size or self.batch_size
        rows = self.rows(split)
        lo, hi = self._process_slice(global_batch)
        load = EvalBatch(rows, global_batch, lo, hi)
        ds = grain.MapDataset.range(math.ceil(len(rows) / global_batch)).map(load)
        return iter(ds.to_iter_dataset(self._read_options()))
