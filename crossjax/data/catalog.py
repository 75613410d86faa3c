"""Which datasets crossjax knows by name, and how their features map to the Batch contract.

Three kinds of dataset names reach the pipeline:

- embedded builders (`EMBEDDED_BUILDERS`): crossjax's own TFDS builders, generated
  locally on first use: the synthetic `crossjax_digits` and `crossjax_shapes`, and the
  pairings derived from catalog datasets (`crossjax_mnist_svhn`, `crossjax_av_mnist`,
  `crossjax_polymnist`, see `crossjax.data.pairings`);
- `FILES_DATASET` ("files"): the user's own files, converted once (`crossjax.data.files`);
- any other TFDS catalog name, e.g. "mnist" or "coco_captions".

`DATASET_DEFAULTS[base name]` holds what a dataset's features do not say:
`features` maps contract keys ("image", "text", "audio", "label", or an extra image
modality "image_<view>") to feature paths (a "/" walks into nested features, e.g.
"captions/text"); unmapped contract keys default to the feature of the same name.
`sample_rate` is the audio rate in Hz when the feature does not carry it. Catalog
datasets that TFDS builds with TensorFlow are listed in `NEEDS_TENSORFLOW` (see there).
"""

from __future__ import annotations

import importlib
from typing import Any

# Contract modalities; "image_<view>" names further image modalities (see `is_image_key`).
MODALITIES = ("image", "text", "audio")
FILES_DATASET = "files"

# Embedded datasets: name -> module that defines (and so registers) the TFDS builder.
EMBEDDED_BUILDERS = {
    "crossjax_digits": "crossjax.data.digits",
    "crossjax_shapes": "crossjax.data.shapes",
    "crossjax_mnist_svhn": "crossjax.data.pairings",
    "crossjax_av_mnist": "crossjax.data.pairings",
    "crossjax_polymnist": "crossjax.data.pairings",
}

POLYMNIST_MAX_VIEWS = 10  # crossjax_polymnist has features m0 .. m{M-1}, M <= this

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # Several draws of one source image: hold validation out by source, like the test split.
    "crossjax_digits": {"sample_rate": 8000, "validation_group": "source_id"},
    # Catalog datasets (feature names checked against tensorflow-datasets 4.9.10).
    "mnist": {"features": {"image": "image", "label": "label"}},  # (28, 28, 1) uint8
    "fashion_mnist": {"features": {"image": "image", "label": "label"}},  # (28, 28, 1)
    "svhn_cropped": {"features": {"image": "image", "label": "label"}},  # (32, 32, 3)
    "cifar10": {"features": {"image": "image", "label": "label"}},  # (32, 32, 3)
    # Images of varying size (set data.image_size); 5+ captions per image, no label.
    "coco_captions": {"features": {"image": "image", "text": "captions/text"}},
    # int16-range int64 waveforms of varying length (set data.audio_length); train only.
    "spoken_digit": {"features": {"audio": "audio", "label": "label"}, "sample_rate": 8000},
    # Pairings (crossjax.data.pairings).
    "crossjax_mnist_svhn": {"features": {"image": "image", "image_svhn": "image_svhn"}},
    # 2,700 training recordings serve 54k pairs: hold validation out by recording, so
    # its recordings (and, one pair per digit image, its images) are never trained on.
    "crossjax_av_mnist": {"sample_rate": 8000, "validation_group": "audio_index"},
    "crossjax_polymnist": {
        "features": {
            "image": "m0",
            **{f"image_m{i}": f"m{i}" for i in range(POLYMNIST_MAX_VIEWS)},
        }
    },
}

# TFDS 4.9.10 needs TensorFlow to even construct these builders (coco's features name
# tf.int64; the Audio feature calls tf.dtypes): without TF they can only be read when
# already prepared elsewhere, and spoken_digit not even then.
NEEDS_TENSORFLOW = {
    "coco_captions": "its TFDS builder declares features with TensorFlow dtypes",
    "spoken_digit": "TFDS's Audio feature is built with TensorFlow, even to read it",
}
UNREADABLE_WITHOUT_TENSORFLOW = ("spoken_digit",)


def base_name(name: str) -> str:
    """ "crossjax_digits/tiny:1.0.0" -> "crossjax_digits"."""
    return name.split("/")[0].split(":")[0]


def is_image_key(key: str) -> bool:
    """True for "image" and extra image modalities "image_<view>" (e.g. "image_svhn")."""
    return key == "image" or (key.startswith("image_") and len(key) > len("image_"))


def is_modality(key: str) -> bool:
    """A name `data.modalities` may hold: image, text, audio or image_<view>."""
    return key in MODALITIES or is_image_key(key)


def import_builder_module(name: str) -> None:
    """Imports the module that registers embedded dataset `name` (no-op for others)."""
    module = EMBEDDED_BUILDERS.get(base_name(name))
    if module:
        importlib.import_module(module)


def feature_map(name: str, overrides: Any, keys: tuple[str, ...]) -> dict[str, str]:
    """Contract key -> feature path for dataset `name`: defaults, then `overrides`
    (`data.features`), then the key itself for every key in `keys` still unmapped."""
    features = dict(DATASET_DEFAULTS.get(base_name(name), {}).get("features", {}))
    features.update(dict(overrides or {}))
    for key in keys:
        features.setdefault(key, key)
    return features


def reads_local_files(data_config: Any) -> bool:
    """True when the dataset comes from the user's files: `data.name` is "files", or
    `data.source.path` is set. The one field that chooses: a catalog config such as
    configs/mnist.py reads TFDS's `mnist` by name, or the same data from a local copy
    (`--config.data.source.path=/data/mnist`, format from `data.source.format`)."""
    source = data_config.get("source", None) or {}
    return base_name(data_config.name) == FILES_DATASET or bool(source.get("path", ""))


def default_validation_group(name: str) -> str | None:
    return DATASET_DEFAULTS.get(base_name(name), {}).get("validation_group")


def default_sample_rate(name: str) -> int | None:
    return DATASET_DEFAULTS.get(base_name(name), {}).get("sample_rate")


def find_feature(features: Any, path: str) -> Any | None:
    """The TFDS feature at `path` ("captions/text" walks into a Sequence/FeaturesDict),
    or None. A flat key containing "/" (coco's "image/filename") wins over a walk."""
    current = features
    rest = path
    while rest:
        current = getattr(current, "feature", current)  # Sequence -> its inner feature
        keys = list(current.keys()) if hasattr(current, "keys") else []
        match = next(
            (
                k
                for k in sorted(keys, key=len, reverse=True)
                if rest == k or rest.startswith(k + "/")
            ),
            None,
        )
        if match is None:
            return None
        current = current[match]
        rest = rest[len(match) + 1 :]
    return current


def read_feature(example: Any, path: str) -> Any:
    """The value at `path` of a decoded example (nested dicts walked by "/")."""
    if path in example:
        return example[path]
    for i in range(len(path) - 1, 0, -1):  # longest flat key first
        if path[i] == "/" and path[:i] in example:
            return read_feature(example[path[:i]], path[i + 1 :])
    raise KeyError(path)


def feature_names(features: Any, prefix: str = "") -> list[str]:
    """Every leaf feature path, e.g. ["captions/id", "captions/text", "image", ...]."""
    inner = getattr(features, "feature", features)
    if not hasattr(inner, "keys"):
        return [prefix] if prefix else []
    names: list[str] = []
    for key in inner.keys():
        names += feature_names(inner[key], f"{prefix}/{key}" if prefix else key)
    return sorted(names)
