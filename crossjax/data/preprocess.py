"""One decoded dataset example -> one example of the Batch contract (numpy, no batch dim).

- image keys ("image", "image_<view>"): (H, W, C) float32 in [0, 1] (uint8 / 255), fitted
  to `image_size` / `image_mode` when given and different (see `crossjax.data.imaging`),
  then (x - image_mean) / image_std per channel when those are given;
- `text` (L,) int32 and `text_mask` (L,) bool: ONE caption. A text feature may hold one
  string or several (coco's "captions/text"); with several, training draws one with the
  rng it is given and evaluation (no rng) takes the first;
- `captions` (C, L) int32 and `captions_mask` (C, L) bool when `all_captions` = C > 0:
  the first C captions, missing ones all-False;
- `audio` (T,) float32 (integers / 32768), cropped/zero-padded to `audio_length` if set;
- `label` () int32; `attr/<name>` for `extra_features`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crossjax.data.catalog import is_image_key, read_feature
from crossjax.data.imaging import fit_image_array
from crossjax.data.tokenizers import TextTokenizer
from crossjax.errors import ConfigError

# The mean and std of OpenAI's CLIP (and open_clip's ViT-B-32 weights) for RGB in [0, 1].
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_captions(value: Any) -> list[str | bytes]:
    """A text feature's value as a list of captions (one string -> a list of one)."""
    if isinstance(value, str | bytes):
        return [value]
    array = np.asarray(value, dtype=object)
    if array.ndim == 0:
        return [array.item()]
    return list(array.reshape(-1))


@dataclasses.dataclass
class Preprocessor:
    """Maps one TFDS example to one example of the Batch contract (numpy, no batch dim)."""

    features: Mapping[str, str]  # contract key -> dataset feature path
    modalities: tuple[str, ...]
    vocab: TextTokenizer | None  # the run's tokenizer (data.tokenizer), when it has text
    max_text_len: int
    audio_length: int
    extra_features: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None  # (H, W) to fit images to; None keeps them
    image_mode: str | None = None  # "RGB" | "L"; None keeps the channels
    all_captions: int = 0  # C > 0: also `captions` (C, L) and `captions_mask`
    image_mean: tuple[float, ...] = ()  # (C,) or (1,): images become (x - mean) / std
    image_std: tuple[float, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """The batch keys an example of this preprocessor carries (see __call__)."""
        keys = [key for key in self.modalities if is_image_key(key)]
        if "text" in self.modalities:
            keys += ["text", "text_mask"] + (
                ["captions", "captions_mask"] if self.all_captions else []
            )
        if "audio" in self.modalities:
            keys.append("audio")
        if "label" in self.features:
            keys.append("label")
        return (*keys, *(f"attr/{name}" for name in self.extra_features))

    @property
    def draws_captions(self) -> bool:
        """Whether training examples want a `caption_seed` (to draw one of several)."""
        return "text" in self.modalities

    def captions_of(self, example: Mapping[str, Any]) -> list[str | bytes]:
        """Every caption of `example` (one for single-text datasets)."""
        return as_captions(read_feature(example, self.features["text"]))

    def __call__(
        self, example: Mapping[str, Any], caption_seed: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """`caption_seed` None (evaluation): the first caption; else one drawn at random
        by `np.random.default_rng(caption_seed)`."""
        out: dict[str, np.ndarray] = {}
        for key in self.modalities:
            if is_image_key(key):
                out[key] = self._image(read_feature(example, self.features[key]))
        if "text" in self.modalities:
            captions = self.captions_of(example)
            pick = 0
            if caption_seed is not None and len(captions) > 1:
                pick = int(np.random.default_rng(caption_seed).integers(len(captions)))
            chosen = captions[pick] if captions else ""
            out["text"], out["text_mask"] = self.vocab.encode(chosen, self.max_text_len)
            if self.all_captions:
                out["captions"], out["captions_mask"] = self._all_captions(captions)
        if "audio" in self.modalities:
            out["audio"] = self._audio(read_feature(example, self.features["audio"]))
        if "label" in self.features:
            out["label"] = np.asarray(read_feature(example, self.features["label"]), np.int32)
        for name in self.extra_features:
            value = np.asarray(read_feature(example, name))
            out[f"attr/{name}"] = (
                value.astype(np.int32) if np.issubdtype(value.dtype, np.integer) else value
            )
        return out

    def _image(self, value: Any) -> np.ndarray:
        img = np.asarray(value)
        if img.ndim == 2:
            img = img[..., None]
        if img.dtype == np.uint8 and self._needs_fitting(img.shape):
            img = fit_image_array(img, self.image_size, self.image_mode)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
        if self.image_mean:
            if len(self.image_mean) not in (1, img.shape[-1]):
                raise ConfigError(
                    f"data.image_mean/image_std have {len(self.image_mean)} values but the "
                    f"images have {img.shape[-1]} channels; give one per channel"
                )
            mean = np.asarray(self.image_mean, np.float32)
            img = (img - mean) / np.asarray(self.image_std, np.float32)
        return img

    def _needs_fitting(self, shape: Sequence[int]) -> bool:
        if self.image_size and tuple(shape[:2]) != tuple(self.image_size):
            return True
        channels = {"RGB": 3, "L": 1}.get(self.image_mode or "", shape[-1])
        return shape[-1] != channels

    def _all_captions(self, captions: list) -> tuple[np.ndarray, np.ndarray]:
        ids = np.zeros((self.all_captions, self.max_text_len), np.int32)
        mask = np.zeros((self.all_captions, self.max_text_len), bool)
        for i, caption in enumerate(captions[: self.all_captions]):
            ids[i], mask[i] = self.vocab.encode(caption, self.max_text_len)
        return ids, mask

    def _audio(self, value: Any) -> np.ndarray:
        audio = np.asarray(value)
        if np.issubdtype(audio.dtype, np.integer):
            audio = audio.astype(np.float32) / 32768.0
        audio = audio.astype(np.float32).reshape(-1)
        if self.audio_length:
            audio = np.pad(audio[: self.audio_length], (0, max(0, self.audio_length - audio.size)))
        return audio


def image_normalization(mean: object, std: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Checked `data.image_mean` / `data.image_std`: both () or both C numbers, std > 0."""
    values = []
    for name, value in (("image_mean", mean), ("image_std", std)):
        value = tuple(value or ())
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"data.{name}={value!r}; valid: per-channel numbers or ()")
        values.append(tuple(float(v) for v in value))
    mean, std = values
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ConfigError(
            f"data.image_mean={mean} and data.image_std={std} must have one number per "
            "channel each (std > 0), or both be ()"
        )
    return mean, std


def collate(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stacks per-example dicts into a batch: each (...) -> (B, ...)."""
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
