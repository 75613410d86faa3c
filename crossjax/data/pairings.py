"""Multimodal pairings derived from TFDS catalog datasets, as TFDS builders of their own.

Each builder reads its source datasets through `tfds` in the same data_dir (preparing
them first if needed: mnist & co. need TensorFlow for that, see `load_split_sources`),
pairs examples of the same label, and writes array_record files. Pairing is seeded:
the same config gives the same dataset, byte for byte.

- `crossjax_mnist_svhn` (MMVAE, Shi et al. 2019): each MNIST digit with `k` SVHN digits
  of its label. Features `image` (28, 28, 1) uint8 = MNIST, `image_svhn` (32, 32, 3)
  uint8 = SVHN, `label`, `mnist_index`, `svhn_index` (indices into the source splits).
  In a batch `image_svhn` is a second image modality: list it in `data.modalities`.
- `crossjax_av_mnist`: each MNIST digit with `k` `spoken_digit` recordings of its label,
  cropped/zero-padded to `audio_length` samples at 8 kHz (0.75 s), and a `text` view: a seeded
  templated sentence naming the digit ("a handwritten seven", "the digit 7").
  Features `image`, `audio` (T,) int16, `text`, `label`, `mnist_index`, `audio_index`.
  spoken_digit has one split: its recordings numbered 0-4 per speaker and digit go to
  test (the FSDD convention; a seeded 10% when file names do not follow it), so no
  recording is in both splits. It reads TFDS's `mnist` and `spoken_digit`, or local
  files (`local_builder_config`: an MNIST idx folder and an FSDD recordings folder,
  see `crossjax.data.pairing_sources`), under a config name holding a hash of the paths.
- `crossjax_polymnist` (Sutter et al. 2021): `num_views` = M images of the same digit,
  each a *different* MNIST instance of the label composited (ink = inverted background)
  on a random 28x28 crop of that view's own procedural background texture. Features
  `m0`..`m{M-1}` (28, 28, 3) uint8, `label`, `mnist_index` (M,) int64. Batch keys:
  `image` = m0, `image_m<i>` = m<i> (see `crossjax.data.catalog`).

Every split pairs within the source's split of the same name (train with train, test
with test), so no test digit is ever seen in training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from crossjax.data import pairing_sources
from crossjax.data.catalog import POLYMNIST_MAX_VIEWS, base_name
from crossjax.data.digit_text import describe_digit
from crossjax.errors import ConfigError, CrossjaxError

NUM_CLASSES = 10
SPLITS = ("train", "test")
_SPLIT_IDS = {"train": 0, "test": 1}
_FSDD_NAME = pairing_sources.FSDD_NAME
FSDD_TEST_RECORDINGS = 5  # recordings 0..4 of each speaker and digit are test
TEXTURE_SIZE = 96  # side of each PolyMNIST view's background texture


def read_source(name: str, split: str, data_dir: str) -> Sequence[dict[str, Any]]:
    """Random-access examples of split `split` of TFDS dataset `name` (prepared if needed)."""
    from crossjax.data.tfds_source import load_split_sources  # local: it imports catalog

    return load_split_sources(name, data_dir, [split])[0][split]


def read_labels(source: Sequence[dict[str, Any]], limit: int | None = None) -> np.ndarray:
    """(N,) int64 labels of the first `limit` (default all) examples, by per-item reads."""
    n = len(source) if limit is None else min(limit, len(source))
    return np.array([int(source[i]["label"]) for i in range(n)], np.int64)


def same_label_partners(
    anchor_labels: np.ndarray, partner_labels: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, k) int64 partner indices: row i holds k partners with label anchor_labels[i],
    distinct when the label has at least k partners."""
    pools = {int(c): np.flatnonzero(partner_labels == c) for c in np.unique(anchor_labels)}
    empty = sorted(c for c, pool in pools.items() if pool.size == 0)
    if empty:
        raise CrossjaxError(f"no partner example has label {empty[0]}; cannot pair it")
    out = np.empty((len(anchor_labels), k), np.int64)
    for i, label in enumerate(anchor_labels):
        pool = pools[int(label)]
        out[i] = rng.choice(pool, size=k, replace=pool.size < k)
    return out


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """(T0,) integer waveform -> (length,) int16: first `length` samples, zero-padded."""
    audio = np.clip(np.asarray(audio).reshape(-1)[:length], -32768, 32767).astype(np.int16)
    return np.pad(audio, (0, length - audio.size))


def spoken_digit_split(filenames: Sequence[str | bytes], seed: int) -> np.ndarray:
    """(N,) bool, True for test recordings: FSDD numbers 0-4, else a seeded 10%."""
    names = [f.decode() if isinstance(f, bytes) else str(f) for f in filenames]
    matches = [_FSDD_NAME.match(n) for n in names]
    if matches and all(matches):
        return np.array([int(m.group(3)) < FSDD_TEST_RECORDINGS for m in matches])
    rng = np.random.default_rng([seed, 4242])
    test = np.zeros(len(names), bool)
    test[rng.permutation(len(names))[: max(1, round(0.1 * len(names)))]] = True
    return test


def _upsampling(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of linear interpolation weights from n_in to n_out points."""
    positions = np.linspace(0, n_in - 1, n_out)
    return np.stack([np.interp(positions, np.arange(n_in), row) for row in np.eye(n_in)], 1)


def background_texture(view: int, seed: int, size: int = TEXTURE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 procedural texture of PolyMNIST view `view`: smooth colour
    blobs, oriented stripes and grain, each view with its own palette."""
    rng = np.random.default_rng([seed, 7919, view])
    up = _upsampling(6, size)
    coarse = rng.uniform(0, 255, size=(6, 6, 3))
    blobs = np.einsum("ai,ijc,bj->abc", up, coarse, up)
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period)
    tint = rng.uniform(0, 255, size=3)
    grain = rng.normal(0, 12, (size, size, 3))
    image = 0.55 * blobs + 0.3 * tint + 30.0 * stripes[..., None] + grain
    return np.clip(image, 0, 255).astype(np.uint8)


def composite_on_texture(
    digit: np.ndarray, texture: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(28, 28[, 1]) uint8 digit on a random crop of `texture` -> (28, 28, 3) uint8; ink
    takes the inverted background colour."""
    ink = np.asarray(digit, np.float32).reshape(digit.shape[0], digit.shape[1], 1) / 255.0
    h, w = ink.shape[:2]
    top = int(rng.integers(0, texture.shape[0] - h + 1))
    left = int(rng.integers(0, texture.shape[1] - w + 1))
    background = texture[top : top + h, left : left + w].astype(np.float32)
    return np.round(background * (1 - ink) + (255.0 - background) * ink).astype(np.uint8)


@dataclasses.dataclass(eq=False)
class PairingConfig(tfds.core.BuilderConfig):
    """seed: seeds every pairing and crop. k: partners per MNIST digit (mnist_svhn,
    av_mnist). audio_length: samples per recording (av_mnist). num_views: M (polymnist).
    max_examples: use only the first N examples of each source split (None: all).
    mnist_path, fsdd_path: local MNIST idx and FSDD recordings folders (av_mnist; "": TFDS)."""

    seed: int = 0
    k: int = 1
    # 0.75 s at 8 kHz holds 97.4% of FSDD recordings whole (the rest lose their tail);
    # 1 s (16 kB a pair) makes the 60k training pairs exceed the 1 GB that TFDS shuffles
    # in memory, beyond which preparing needs TensorFlow.
    audio_length: int = 6000
    num_views: int = 5
    max_examples: int | None = None
    mnist_path: str = ""
    fsdd_path: str = ""


LOCAL_SOURCES = {"crossjax_av_mnist": ("mnist", "spoken_digit")}  # pairing -> local sources


def local_builder_config(name: str, sources: Any) -> PairingConfig | None:
    """The builder config of pairing `name` ("crossjax_av_mnist[/tiny]") reading the local
    folders `sources` ({"mnist": idx folder, "spoken_digit": FSDD folder}; "" or missing:
    TFDS), named "<config>_local_<hash of the paths>"; None when no path is set."""
    paths = {k: str(v) for k, v in dict(sources or {}).items() if v}
    if not paths:
        return None
    valid = LOCAL_SOURCES.get(base_name(name))
    if valid is None or set(paths) - set(valid):
        what = f"{', '.join(valid)} of {base_name(name)}" if valid else f"nothing for {name!r}"
        raise ConfigError(
            f"data.pairing_sources={paths!r}: local sources are {what} "
            f"(pairings that read local files: {', '.join(LOCAL_SOURCES)})"
        )
    configs = {c.name: c for c in CrossjaxAvMnist.BUILDER_CONFIGS}
    config_name = name.split("/")[1].split(":")[0] if "/" in name else "default"
    if config_name not in configs:
        raise ConfigError(f"bad dataset name {name!r}; configs: {', '.join(configs)}")
    digest = pairing_sources.sources_hash(paths)
    return dataclasses.replace(
        configs[config_name],
        name=f"{config_name}_local_{digest}",
        description=f"{configs[config_name].description} Local sources: {paths}.",
        mnist_path=paths.get("mnist", ""),
        fsdd_path=paths.get("spoken_digit", ""),
    )


def _configs(k: int) -> list[PairingConfig]:
    return [
        PairingConfig(name="default", description="Every source example.", k=k),
        PairingConfig(
            name="tiny", description="First 300 source examples; for tests.", k=2,
            max_examples=300, audio_length=4000, num_views=3,
        ),
    ]  # fmt: skip


def _mnist_image() -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8)


class _PairingBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared plumbing: reading source splits from the builder's own data_dir."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    DEFAULT_CONFIG_NAME = "default"

    def _source(self, name: str, split: str) -> Sequence[dict[str, Any]]:
        return read_source(name, split, str(self.data_dir_root))

    def _limit(self, source: Sequence) -> int:
        limit = self.builder_config.max_examples
        return len(source) if limit is None else min(limit, len(source))

    def _rng(self, split: str, *more: int) -> np.random.Generator:
        return np.random.default_rng([self.builder_config.seed, _SPLIT_IDS[split], *more])

    def _split_generators(self, dl_manager):
        del dl_manager  # everything comes from the source datasets
        return {split: self._generate_examples(split) for split in SPLITS}


class CrossjaxMnistSvhn(_PairingBuilder):
    """MNIST digits each paired with k SVHN digits of the same label."""

    BUILDER_CONFIGS = _configs(k=5)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": _mnist_image(),
                    "image_svhn": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                    "mnist_index": tfds.features.Tensor(shape=(), dtype=np.int64),
                    "svhn_index": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _generate_examples(self, split: str):
        mnist, svhn = self._source("mnist", split), self._source("svhn_cropped", split)
        labels = read_labels(mnist, self._limit(mnist))
        partners = same_label_partners(
            labels, read_labels(svhn, self._limit(svhn)), self.builder_config.k, self._rng(split)
        )
        for i, label in enumerate(labels):
            image = np.asarray(mnist[i]["image"], np.uint8)
            for r, j in enumerate(partners[i]):
                yield (
                    f"{i}_{r}",
                    {
                        "image": image,
                        "image_svhn": np.asarray(svhn[int(j)]["image"], np.uint8),
                        "label": int(label),
                        "mnist_index": i,
                        "svhn_index": int(j),
                    },
                )


class CrossjaxAvMnist(_PairingBuilder):
    """MNIST digits each paired with k spoken_digit recordings of the same label and a
    sentence naming the digit."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "text view; local sources."}
    BUILDER_CONFIGS = _configs(k=1)

    def _images(self, split: str) -> pairing_sources.DigitImages:
        cfg = self.builder_config
        if cfg.mnist_path:
            return pairing_sources.local_images(cfg.mnist_path, split, cfg.max_examples)
        mnist = self._source("mnist", split)
        return pairing_sources.catalog_images(mnist, self._limit(mnist))

    def _recordings(self) -> pairing_sources.Recordings:
        """Every recording, read once for both splits (each split keeps its own takes)."""
        if getattr(self, "_speech", None) is None:
            if self.builder_config.fsdd_path:
                self._speech = pairing_sources.local_recordings(self.builder_config.fsdd_path)
            else:
                speech = self._source("spoken_digit", "train")
                self._speech = pairing_sources.catalog_recordings(speech, self._limit(speech))
        return self._speech

    def _info(self) -> tfds.core.DatasetInfo:
        length = self.builder_config.audio_length
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": _mnist_image(),
                    # Raw bytes: the default encoding widens int16 to varint int64.
                    "audio": tfds.features.Tensor(
                        shape=(length,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES
                    ),
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                    "mnist_index": tfds.features.Tensor(shape=(), dtype=np.int64),
                    "audio_index": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(sample_rate=8000),
        )

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        images, speech = self._images(split), self._recordings()
        in_split = spoken_digit_split(speech.names, cfg.seed) == (split == "test")
        pool = np.flatnonzero(in_split)
        rng = self._rng(split)
        partners = pool[same_label_partners(images.labels, speech.labels[pool], cfg.k, rng)]
        for i, label in enumerate(images.labels):
            image = np.asarray(images.image(i), np.uint8)
            for r, j in enumerate(partners[i]):
                text = describe_digit(self._rng(split, i, r), int(label), noisy=False)
                yield (
                    f"{i}_{r}",
                    {
                        "image": image,
                        "audio": fit_length(speech.audio(int(j)), cfg.audio_length),
                        "text": text,
                        "label": int(label),
                        "mnist_index": i,
                        "audio_index": int(j),
                    },
                )


class CrossjaxPolymnist(_PairingBuilder):
    """M views of each digit class: different MNIST instances on per-view textures."""

    BUILDER_CONFIGS = _configs(k=1)

    def _info(self) -> tfds.core.DatasetInfo:
        views = {
            f"m{v}": tfds.features.Tensor(shape=(28, 28, 3), dtype=np.uint8)
            for v in range(self.builder_config.num_views)
        }
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    **views,
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                    "mnist_index": tfds.features.Tensor(
                        shape=(self.builder_config.num_views,), dtype=np.int64
                    ),
                }
            ),
            supervised_keys=("m0", "label"),
        )

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        if not 1 <= cfg.num_views <= POLYMNIST_MAX_VIEWS:
            raise CrossjaxError(f"num_views={cfg.num_views}; valid: 1..{POLYMNIST_MAX_VIEWS}")
        mnist = self._source("mnist", split)
        labels = read_labels(mnist, self._limit(mnist))
        textures = [background_texture(v, cfg.seed) for v in range(cfg.num_views)]
        # Other instances of each digit's label (itself excluded when there are others).
        others = same_label_partners(labels, labels, cfg.num_views, self._rng(split))
        for i, label in enumerate(labels):
            rest = [int(j) for j in others[i] if j != i] or [int(j) for j in others[i]]
            indices = [i, *(rest * cfg.num_views)[: cfg.num_views - 1]]
            rng = self._rng(split, i)
            example = {
                f"m{v}": composite_on_texture(np.asarray(mnist[j]["image"]), textures[v], rng)
                for v, j in enumerate(indices)
            }
            yield str(i), {**example, "label": int(label), "mnist_index": np.array(indices)}
