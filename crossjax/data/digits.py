"""crossjax_digits: trimodal, label-aligned digits (noisy image, noisy text, noisy audio).

Each example pairs one real handwritten digit from `sklearn.datasets.load_digits()` (1797
8x8 images by 43 writers) with independent noisy draws of three views of its label:

- `image`: Tensor (8, 8, 1) float32 in [0, 1]: the source image (0..16 scaled by 1/16),
  degraded per draw by a one-pixel shift, contrast loss, a random occluding patch and
  Gaussian pixel noise (see `degrade_digit_image`).
- `text`: Text (bytes when read back): a lowercase description of at most 16 words, e.g.
  "a handwritten seven", "the digit 7", with typos, dropped and distracting words; some
  carry only partial information ("an odd number") or none (see `digit_text`).
- `audio`: Tensor (2000,) float32 in [-1, 1]: 0.25 s at 8000 Hz (`SAMPLE_RATE`,
  `AUDIO_SAMPLES`), the digit's DTMF tone pair with random timing, gain, detuning, an
  occasional interfering keypad tone, and white noise at a random SNR (see `dtmf`).
- `label`: ClassLabel with 10 classes named "0".."9".
- `source_id`: Tensor () int64: index of the source image in `load_digits()`.

Split rule: source images are split by a seeded permutation, stratified by label, into
train (~80%) and test (~20%); no source image appears in both. Each train source image
yields `train_draws` examples and each test source image `test_draws`, every draw with its
own noise. Every random number comes from a numpy Generator seeded by (config seed, split,
source id, draw), so generation is reproducible and independent of order.

Each modality alone is deliberately imperfect (about 0.8-0.9 test accuracy for simple
classifiers) with independent errors, so that fusing them pays: `scripts/dataset_stats.py`
measures it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from crossjax.data.digit_text import describe_digit
from crossjax.data.dtmf import AUDIO_SAMPLES, SAMPLE_RATE, synthesize_dtmf

__all__ = [
    "AUDIO_SAMPLES",
    "SAMPLE_RATE",
    "CrossjaxDigits",
    "DigitsConfig",
    "degrade_digit_image",
    "describe_digit",
    "load_source_digits",
    "split_sources",
    "synthesize_dtmf",
]

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
_SPLIT_IDS = {"train": 0, "test": 1}

# Image degradation ranges (tuned: an MLP on the 64 pixels is ~0.85 accurate).
SHIFT_PROB = 0.5  # chance of a one-pixel shift along each axis
CONTRAST = (0.6, 1.0)  # multiplies the digit strokes
OCCLUDE_PROB = 0.35  # chance of one occluding patch
OCCLUDE_SIZE = (2, 4)  # patch height and width, inclusive range in pixels
NOISE_STD = (0.05, 0.15)  # Gaussian pixel noise


@dataclasses.dataclass(eq=False)
class DigitsConfig(tfds.core.BuilderConfig):
    """Sizes and seed of a `crossjax_digits` variant.

    seed: base seed of the split and of every draw.
    train_draws / test_draws: noisy examples per source image in train / test.
    test_fraction: fraction of the source images (per label) that go to test.
    max_sources: use only this many source images (stratified, seeded), or None for all.
    clean_views: the source image undegraded and a description that always names the
      digit (no partial or missing information, no typos); the audio stays noisy.
    """

    seed: int = 0
    train_draws: int = 8
    test_draws: int = 4
    test_fraction: float = 0.2
    max_sources: int | None = None
    clean_views: bool = False


def load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 clean sklearn digits: images (N, 8, 8) float32 in [0, 1], labels (N,) int."""
    from sklearn.datasets import load_digits  # local: sklearn is slow to import

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def split_sources(
    labels: np.ndarray, *, seed: int, test_fraction: float, max_sources: int | None = None
) -> dict[str, np.ndarray]:
    """Stratified seeded split of source indices: {"train": (N_tr,), "test": (N_te,)} int64.

    Each label keeps round(test_fraction * n_label) (at least 1) of its sources for test;
    with max_sources, each label first keeps only its share of max_sources.
    """
    rng = np.random.default_rng([seed, 1234])
    keep_fraction = 1.0 if max_sources is None else min(1.0, max_sources / len(labels))
    train, test = [], []
    for label in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == label))
        idx = idx[: max(2, round(keep_fraction * len(idx)))]
        n_test = max(1, round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def degrade_digit_image(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """(8, 8) clean digit in [0, 1] -> (8, 8, 1) float32 noisy digit in [0, 1]."""
    x = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        if rng.random() < SHIFT_PROB:  # shift by one pixel, filling the vacated edge with 0
            step = 1 if rng.random() < 0.5 else -1
            x = np.roll(x, step, axis=axis)
            edge = 0 if step == 1 else -1
            if axis == 0:
                x[edge, :] = 0.0
            else:
                x[:, edge] = 0.0
    x = x * rng.uniform(*CONTRAST)
    if rng.random() < OCCLUDE_PROB:
        h, w = rng.integers(OCCLUDE_SIZE[0], OCCLUDE_SIZE[1] + 1, size=2)
        top, left = rng.integers(0, 8 - h + 1), rng.integers(0, 8 - w + 1)
        x[top : top + h, left : left + w] = rng.uniform(0.0, 1.0)
    x = x + rng.normal(0.0, rng.uniform(*NOISE_STD), size=x.shape)
    return np.clip(x, 0.0, 1.0).astype(np.float32)[..., None]


def make_digit_example(
    rng: np.random.Generator, image: np.ndarray, label: int, source_id: int, clean: bool = False
) -> dict[str, np.ndarray | str | int]:
    """One example dict (the builder's features) from a clean (8, 8) source image;
    `clean` keeps the image as it is and the description fully informative."""
    return {
        "image": image[..., None].astype(np.float32) if clean else degrade_digit_image(rng, image),
        "text": describe_digit(rng, label, noisy=not clean),
        "audio": synthesize_dtmf(rng, label),
        "label": int(label),
        "source_id": np.int64(source_id),
    }


class CrossjaxDigits(tfds.core.GeneratorBasedBuilder):
    """Trimodal digits: noisy 8x8 handwritten image, noisy description, noisy DTMF audio."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        DigitsConfig(name="default", description="All 1797 sources; 8 train, 4 test draws."),
        DigitsConfig(
            name="tiny",
            description="300 sources, 2 draws each: for tests.",
            max_sources=300,
            train_draws=2,
            test_draws=2,
        ),
        DigitsConfig(
            name="clean",
            description="All sources with clean images and always-informative text (noisy "
            "audio): for generative models, whose coherence the default's deliberately "
            "degraded views bound.",
            clean_views=True,
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32),
                    "text": tfds.features.Text(),
                    "audio": tfds.features.Tensor(shape=(AUDIO_SAMPLES,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                    "source_id": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # everything is generated locally
        images, labels = load_source_digits()
        cfg = self.builder_config
        splits = split_sources(
            labels, seed=cfg.seed, test_fraction=cfg.test_fraction, max_sources=cfg.max_sources
        )
        draws = {"train": cfg.train_draws, "test": cfg.test_draws}
        return {
            name: self._generate_examples(name, images, labels, ids, draws[name])
            for name, ids in splits.items()
        }

    def _generate_examples(
        self, split: str, images: np.ndarray, labels: np.ndarray, ids: np.ndarray, draws: int
    ):
        seed = self.builder_config.seed
        for source_id in ids:
            for draw in range(draws):
                rng = np.random.default_rng([seed, _SPLIT_IDS[split], int(source_id), draw])
                example = make_digit_example(
                    rng,
                    images[source_id],
                    labels[source_id],
                    source_id,
                    self.builder_config.clean_views,
                )
                yield f"{source_id}_{draw}", example
