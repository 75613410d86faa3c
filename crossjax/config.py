"""Experiment config defaults and validation (ml_collections).

Every config file in `configs/` starts from `base_config()` and overrides what its
experiment needs. `validate_config` turns wrong types and bad values into one-line
ConfigErrors before any work starts.
"""

from __future__ import annotations

import json

import ml_collections

from crossjax.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by every experiment; config files override fields."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_train_steps = 1000
    c.batch_size = 128
    c.eval_batch_size = 0  # 0: same as batch_size
    c.log_every = 100
    c.eval_every = 0  # 0: evaluate only at the end
    c.checkpoint_every = 500
    c.keep_checkpoints = 3
    c.best_metric = ""  # an eval metric name ("accuracy", "neg_elbo"); "" keeps only the latest
    c.best_mode = "max"
    c.num_devices = 0  # 0: every device of every process
    c.model_parallel = 1  # size of the mesh's `model` axis (splits wide layers); 1: data only
    c.param_sharding = "replicated"  # or "fsdp": shard params + optimizer state over `data`
    c.fsdp_min_size = 2**14  # FSDP leaves arrays with fewer elements replicated
    c.grad_accum_steps = 1  # micro-batches per step (batch_size is the total)
    c.remat = False  # recompute the forward pass's activations in the backward pass
    # Persistent XLA compilation cache (crossjax.compilation_cache): "auto" is
    # $JAX_COMPILATION_CACHE_DIR, else ~/.cache/crossjax/xla; a path; "" turns it off.
    c.compilation_cache_dir = "auto"
    c.data = ml_collections.ConfigDict(
        {
            # TFDS name ("crossjax_shapes/tiny", "mnist", "crossjax_mnist_svhn"), or "files"
            # for your own files described by `source` (docs/train_on_your_data.md).
            "name": "crossjax_digits",
            "data_dir": "",  # "": $CROSSJAX_DATA_DIR or ~/tensorflow_datasets
            # image, text, audio, or image_<view> for a dataset's further image views
            # (crossjax_mnist_svhn's "image_svhn", crossjax_polymnist's "image_m1", ...).
            "modalities": ("image",),
            # Contract key -> dataset feature path, overriding crossjax.data.catalog's
            # defaults, e.g. {"image": "image_svhn"} or {"text": "captions/text"}.
            "features": {},
            "label_key": "label",  # "" for unlabelled data
            # Train on train, choose on validation, report test once. Validation is the
            # dataset's own split where it has one (validation_split, e.g. "validation"),
            # else (None) a hold-out of validation_fraction of train, stratified by label,
            # chosen by validation_seed (fixed across training seeds) and never trained on.
            "train_split": "train",
            "validation_split": None,
            "validation_fraction": 0.1,
            "validation_seed": 0,
            # A feature whose examples are held out together (e.g. crossjax_digits'
            # "source_id": every draw of a source image on one side, as in its test split);
            # None: the dataset's default (crossjax.data.catalog), "" for none.
            "validation_group": None,
            "test_split": "test",
            "max_text_len": 16,
            # The word vocabulary (tokenizer kind ""): words seen vocab_min_count times in
            # the training split, at most max_vocab_size ids, saved as vocab.json in the run.
            "vocab_min_count": 2,
            "max_vocab_size": 5000,
            # A pretrained text tower's own tokenizer (crossjax.data.tokenizers), read from
            # the checkpoint's files; the tower's vocab_size is then the tokenizer's.
            # kind: "" (word vocabulary) | "wordpiece" (BERT vocab.txt) | "gpt2_bpe" (GPT-2
            # vocab.json + merges) | "clip_bpe" (merges: open_clip's
            # bpe_simple_vocab_16e6.txt.gz, "": the one inside open_clip_torch; vocab_size:
            # 0 for open_clip's 49408). lowercase/strip_accents: None = the kind's default.
            "tokenizer": {
                "kind": "",
                "vocab": "",
                "merges": "",
                # typed placeholders (None) so --config.data.tokenizer.lowercase=False works
                "lowercase": ml_collections.config_dict.placeholder(bool),
                "strip_accents": ml_collections.config_dict.placeholder(bool),
                "vocab_size": 0,
            },
            "audio_length": 0,  # crop/pad waveforms to this many samples; 0 keeps them
            "sample_rate": 0,  # 0: from the dataset
            "extra_features": (),  # dataset features passed through as batch["attr/<name>"]
            # Images: (H, W) to resize (shorter side) + centre-crop to; () keeps the
            # dataset's size (for "files": the first image's). Mode "RGB" | "L"; "" keeps
            # the dataset's channels (for "files": RGB, idx files: L).
            "image_size": (),
            "image_mode": "",
            # Per-channel (C,) mean and std that images in [0, 1] are normalised with,
            # (x - mean) / std, e.g. CLIP's for a pretrained tower (OPENAI_CLIP_MEAN/STD in
            # crossjax.data.preprocess); () keeps [0, 1].
            "image_mean": (),
            "image_std": (),
            # C > 0: batches also carry `captions` (B, C, L) int32 + `captions_mask` (B, C, L)
            # bool, the first C captions of each example (missing ones all-False). `text`
            # is always ONE caption: a seeded random one in training, the first in eval.
            "all_captions": 0,
            # Incomplete training data: this fraction of training examples (chosen once, by
            # missing_seed) each lose one modality drawn from missing_modalities (() = all
            # of modalities); batches then carry `present/<m>` (B,) bool and the absent
            # values are zeroed. Validation and test stay complete.
            "missing_fraction": 0.0,
            "missing_modalities": (),
            "missing_seed": 0,
            # Few labels: only num_labels training examples (num_labels / classes of each
            # class) or labeled_fraction of them (stratified) keep their label, drawn once
            # by label_seed from the training part (never validation or test); batches then
            # carry `present/label` (B,) bool and an unlabelled row's label is 0. None: all.
            "num_labels": None,
            "labeled_fraction": None,
            "label_seed": 0,
            # Every training batch holds this many labelled examples (the labelled pool
            # cycled, reshuffled each epoch) plus batch_size - labeled_batch_size unlabelled
            # ones; None: a plain shuffle of all training examples.
            "labeled_batch_size": None,
            # Weak pairing: only this fraction of training examples (chosen by pairing_seed)
            # keep all modalities; each other one becomes one single-modality example per
            # modality (`present/<m>` marks which). 1.0: all paired.
            "paired_fraction": 1.0,
            "pairing_seed": 0,
            # When some training examples lack a modality (paired_fraction < 1 or
            # missing_fraction > 0): every batch holds this many complete examples plus
            # batch_size - paired_batch_size incomplete ones. None, or every example
            # complete: a plain shuffle.
            "paired_batch_size": None,
            # Training-time augmentation, drawn per example inside the jitted train step
            # (crossjax.augment): None, "weak", "strong", or {modality: {setting: value}},
            # e.g. {"image": {"max_shift": 2, "flip": True}}. Evaluation sees clean data.
            "augment": None,
            "cache": "auto",  # keep preprocessed splits in memory: auto (if small) | always | never
            "cache_max_mb": 2048,  # the size limit of cache="auto"
            "device_cache": True,  # keep a cached training split on the devices (1 process)
            # Your own files: used when name="files" or when `path` is set (then a catalog
            # config such as configs/mnist.py reads a local copy instead of TFDS). Converted
            # once into data_dir/crossjax_files/<format>_<name>_<hash>; a changed file or
            # option converts again.
            "source": {
                "format": "",  # manifest | coco | idx | image_folder | audio_folder
                # manifest (.jsonl/.csv), COCO json, idx folder, image folder, audio folder
                "path": "",
                "images": "",  # coco: image folder ("": the annotation file's folder)
                "test_path": "",  # coco: annotations of the test split ("": split off)
                "test_images": "",  # coco: image folder of test_path ("": its folder)
                "test_fraction": 0.1,  # held out for "test" when the source has no split
                "split_seed": 0,  # seeds that hold-out (fixed across training seeds)
                # audio_folder: a regex with a group named `label`, searched in each file
                # name; "": the part before the first "_" ("7_jackson_32.wav" -> "7"), or
                # the class sub-folder when the WAVs sit in two or more sub-folders.
                "label_pattern": "",
                # audio_folder: files whose name matches this regex are the test split
                # (FSDD: r"_[0-4]\.wav$"); "": a seeded test_fraction hold-out.
                "test_pattern": "",
                # Integer labels must be < num_classes (others are bad rows, e.g. idx label
                # 255 of a 10-class set); 0 infers the classes from the labels.
                "num_classes": 0,
                # (train, test) split names used instead of data.train_split / test_split
                # when reading local files (a converted source has "train" and "test"; a
                # catalog config may slice its own splits differently); () keeps those.
                "splits": (),
            },
            "num_threads": 2,  # Grain read threads
            "prefetch": 4,  # batches prefetched by Grain
        }
    )
    c.model = ml_collections.ConfigDict({"name": ""})
    c.losses = (("cross_entropy", 1.0),)
    c.evaluators = ()  # extra evaluators: "name" or ("name", {kwargs}); see crossjax.evaluators
    c.optimizer = ml_collections.ConfigDict(
        {
            "name": "adamw",
            "learning_rate": 1e-3,
            "schedule": "cosine",
            "warmup_steps": 100,
            "b1": 0.9,
            "b2": 0.999,
            # adamw: decoupled; adam and sgd: wd * param added to the gradient (torch's).
            "weight_decay": 1e-4,
            "grad_clip_norm": 1.0,  # 0 disables clipping
            # Parameter path prefixes or tower names that never change, e.g.
            # ("image_encoder",) for locked-image tuning (crossjax.param_groups).
            "frozen": (),
            # d < 1: block k of an L-block transformer tower trains at lr * d**(L - k),
            # its embeddings at lr * d**(L + 1), its head at lr; 1.0: off.
            "layer_decay": 1.0,
        }
    )
    return c


_POSITIVE_INTS = (
    "num_train_steps",
    "batch_size",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
)
_NON_NEGATIVE_INTS = ("seed", "eval_batch_size", "eval_every", "num_devices")
_POSITIVE_INTS += ("model_parallel", "grad_accum_steps", "fsdp_min_size")
_CHOICES = {"best_mode": ("max", "min"), "param_sharding": ("replicated", "fsdp")}


def variant_flags(variant: str | None, valid: tuple[str, ...]) -> set[str]:
    """The flags of a config variant ("clean_missing" -> {"clean", "missing"}); ValueError
    for a flag that is not in `valid`."""
    flags = set(variant.split("_")) if variant else set()
    if flags - set(valid) or (variant and "" in flags):
        raise ValueError(
            f"unknown config variant {variant!r}; valid: any of {', '.join(valid)} joined by '_'"
        )
    return flags


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first bad field (type, range or choice)."""
    for name in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
        if name not in config:
            raise ConfigError(
                f"config has no field {name!r}; start configs from crossjax.config.base_config()"
            )
        value = config[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(
                f"config.{name}={value!r} must be an integer, not {type(value).__name__}"
            )
        if value < (1 if name in _POSITIVE_INTS else 0):
            raise ConfigError(
                f"config.{name}={value} must be {'>= 1' if name in _POSITIVE_INTS else '>= 0'}"
            )
    for name, choices in _CHOICES.items():
        if config[name] not in choices:
            raise ConfigError(f"config.{name}={config[name]!r}; valid: {', '.join(choices)}")
    if config.batch_size % config.grad_accum_steps:
        raise ConfigError(
            f"batch_size={config.batch_size} must be a multiple of grad_accum_steps={config.grad_accum_steps}"
        )
    for section in ("data", "model", "optimizer"):
        if not isinstance(config.get(section), ml_collections.ConfigDict):
            raise ConfigError(f"config.{section} must be a section (ConfigDict)")
    if not isinstance(config.model.get("name"), str) or not config.model.name:
        raise ConfigError(
            "config.model.name must name a model (see crossjax.models.MODELS.names())"
        )
    if not isinstance(config.data.get("name"), str) or not config.data.name:
        raise ConfigError("config.data.name must name a dataset, e.g. 'crossjax_digits'")
    check_data_config(config.data)
    opt = config.optimizer
    for name in ("learning_rate", "weight_decay", "grad_clip_norm", "b1", "b2"):
        if not isinstance(opt.get(name), (int, float)) or isinstance(opt.get(name), bool):
            raise ConfigError(f"config.optimizer.{name}={opt.get(name)!r} must be a number")
    decay = opt.get("layer_decay", 1.0)
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 < decay <= 1:
        raise ConfigError(f"config.optimizer.layer_decay={decay!r}; valid: 0 < value <= 1")
    if not isinstance(opt.get("warmup_steps"), int) or opt.warmup_steps < 0:
        raise ConfigError(
            f"config.optimizer.warmup_steps={opt.get('warmup_steps')!r} must be an integer >= 0"
        )


def check_data_config(data: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for data fields that were renamed, and for an unknown
    data.tokenizer.kind (its files are read when the data pipeline starts)."""
    if "eval_split" in data:
        raise ConfigError(
            "data.eval_split was renamed data.test_split (validation: data.validation_split); "
            "rename it in your config"
        )
    from crossjax.data.tokenizers import tokenizer_kind  # local: config imports no data code

    tokenizer_kind(data.get("tokenizer", None))


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-able plain dict of `config` (tuples become lists)."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file named "path/to/config.py[:variant]".

    The file's grandparent directory goes on sys.path, so configs that import
    `configs.<other>` (as the repository's do) load from anywhere.
    """
    import importlib.util
    import sys
    from pathlib import Path

    path_str, _, variant = spec.partition(":")
    path = Path(path_str).resolve()
    if not path.is_file():
        raise ConfigError(f"config file {path_str} does not exist")
    root = str(path.parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    module_spec = importlib.util.spec_from_file_location(f"_crossjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        config = module.get_config(variant or None) if variant else module.get_config()
    except Exception as e:  # noqa: BLE001 - whatever the user's config file raised
        raise ConfigError(f"cannot load config {spec}: {type(e).__name__}: {e}") from None
    return config
