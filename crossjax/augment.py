"""Data augmentation inside the jitted step: per example, seeded by a PRNG key.

Consistency losses (FixMatch, cross-modal co-training: crossjax.losses.semi_supervised)
compare a model's predictions on a weakly and a strongly augmented view of the same
example, so the views are drawn in JAX from the loss's `ctx.rng`, not in the data
pipeline (which yields one clean view per example).

- images (B, H, W, C) in [0, 1]: one affine warp per example (integer translation by up
  to `max_shift` pixels; the strong view adds rotation, scale and shear), then cutout
  (a square set to 0, the digits' background), contrast/brightness, and a left-right flip
  only where asked (`flip`; FixMatch's views never flip: a mirrored digit is another
  symbol, or none).
- audio (B, T) waveforms or (B, F, T) spectrograms: time shift (zero-filled, not
  wrapped), gain in dB, additive Gaussian noise relative to the example's RMS, a time
  mask; a frequency mask only for spectrograms (a waveform has no frequency axis).

Settings that are all zero give the input back exactly. `augment_batch` applies a
setting to every augmentable modality of a batch (other keys unchanged). The trainer
applies `data.augment` to every training batch this way (crossjax.train).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from crossjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ImageAugment:
    """How far each image transform may go (each drawn uniformly per example).

    max_shift: translation in whole pixels, each axis in [-max_shift, max_shift].
    rotate_deg / scale / shear: rotation angle in [-rotate_deg, rotate_deg], zoom factor
      in [1 - scale, 1 + scale], shear in [-shear, shear] (all about the image centre).
    cutout: side in pixels of a square set to 0 at a random place (0: none).
    contrast / brightness: pixels scaled about the image mean by a factor in
      [1 - contrast, 1 + contrast], then shifted by [-brightness, brightness]; clipped
      to [0, 1] only when either is set.
    flip: mirror left-right with probability 1/2 (clothes, scenes; never for digits or
      text).
    """

    max_shift: int = 0
    rotate_deg: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    cutout: int = 0
    contrast: float = 0.0
    brightness: float = 0.0
    flip: bool = False


@dataclasses.dataclass(frozen=True)
class AudioAugment:
    """How far each audio transform may go (each drawn uniformly per example).

    max_shift: time shift as a fraction of the length T, in [-max_shift, max_shift]
      (zero-filled). gain_db: gain in [-gain_db, gain_db] dB. noise: Gaussian noise of
      standard deviation `noise` x the example's RMS. time_mask: a span of up to
      `time_mask` x T samples (frames) set to 0. freq_mask: up to that many frequency
      bins set to 0; spectrogram input (B, F, T) only, ignored for waveforms (B, T).
    """

    max_shift: float = 0.0
    gain_db: float = 0.0
    noise: float = 0.0
    time_mask: float = 0.0
    freq_mask: int = 0


# FixMatch's weak view (translation; no flip for digits) and a RandAugment-like strong
# one at a fixed, high magnitude (Sohn et al. 2020 draw 2 of 14 transforms per example;
# for 28x28 digits the geometric ones, cutout and contrast are the ones that keep the
# class; a 10-pixel cutout already turned some 1s and 4s into other shapes, 8 rarely does).
WEAK = {"image": ImageAugment(max_shift=2), "audio": AudioAugment(max_shift=0.1, gain_db=3.0)}
STRONG = {
    "image": ImageAugment(
        max_shift=3, rotate_deg=20.0, scale=0.15, shear=0.2, cutout=8, contrast=0.5,
        brightness=0.2,
    ),
    "audio": AudioAugment(max_shift=0.2, gain_db=10.0, noise=0.3, time_mask=0.2, freq_mask=8),
}  # fmt: skip
STRENGTHS = {"weak": WEAK, "strong": STRONG}


def _uniform(key: jax.Array, bound: float) -> jax.Array:
    return jax.random.uniform(key, (), minval=-bound, maxval=bound)


def _augment_one_image(key: jax.Array, image: jax.Array, s: ImageAugment) -> jax.Array:
    """One image (H, W, C)."""
    height, width, _ = image.shape
    k_shift, k_rot, k_scale, k_shear, k_cut, k_con, k_bri = jax.random.split(key, 7)
    shift = jax.random.randint(k_shift, (2,), -s.max_shift, s.max_shift + 1).astype(jnp.float32)
    angle = jnp.deg2rad(_uniform(k_rot, s.rotate_deg))
    zoom = 1.0 + _uniform(k_scale, s.scale)
    shear = _uniform(k_shear, s.shear)
    # Output pixel (r, c) reads input at centre + A^-1 (r - centre - shift): the inverse
    # of rotate . shear . zoom, so the digit itself moves by `shift` and grows by `zoom`.
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    forward = jnp.array([[cos, -sin], [sin, cos]]) @ jnp.array([[1.0, shear], [0.0, 1.0]]) * zoom
    inverse = jnp.linalg.inv(forward)
    centre = jnp.array([(height - 1) / 2, (width - 1) / 2])
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    grid = jnp.stack([rows, cols]).reshape(2, -1).astype(jnp.float32)
    source = inverse @ (grid - centre[:, None] - shift[:, None]) + centre[:, None]
    if not (s.rotate_deg or s.scale or s.shear):
        source = jnp.round(source)  # whole-pixel shifts stay exact (no interpolation)

    def warp(channel: jax.Array) -> jax.Array:
        return map_coordinates(channel, list(source), order=1, mode="constant", cval=0.0)

    out = jax.vmap(warp, in_axes=-1, out_axes=-1)(image).reshape(image.shape)
    if s.cutout:
        top = jax.random.randint(k_cut, (2,), 0, jnp.array([height, width]))
        inside = (jnp.abs(rows - top[0]) * 2 < s.cutout) & (jnp.abs(cols - top[1]) * 2 < s.cutout)
        out = jnp.where(inside[..., None], 0.0, out)
    if s.contrast or s.brightness:
        factor = 1.0 + _uniform(k_con, s.contrast)
        mean = jnp.mean(out)
        out = jnp.clip((out - mean) * factor + mean + _uniform(k_bri, s.brightness), 0.0, 1.0)
    if s.flip:  # its own key: the draws above stay those of the settings without flip
        out = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, 7)), out[:, ::-1], out)
    return out.astype(image.dtype)


def augment_image(key: jax.Array, images: jax.Array, settings: ImageAugment) -> jax.Array:
    """Images (B, H, W, C) in [0, 1], each transformed with its own draw from `key`."""
    chex.assert_rank(images, 4)
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda k, x: _augment_one_image(k, x, settings))(keys, images)


def _span_mask(key: jax.Array, length: int, max_span: int) -> jax.Array:
    """(length,) bool: True on a random span of 0..max_span positions."""
    k_len, k_start = jax.random.split(key)
    span = jax.random.randint(k_len, (), 0, max_span + 1)
    start = jax.random.randint(k_start, (), 0, jnp.maximum(length - span, 0) + 1)
    positions = jnp.arange(length)
    return (positions >= start) & (positions < start + span)


def _augment_one_audio(key: jax.Array, audio: jax.Array, s: AudioAugment) -> jax.Array:
    """One waveform (T,) or spectrogram (F, T)."""
    length = audio.shape[-1]
    k_shift, k_gain, k_noise, k_time, k_freq = jax.random.split(key, 5)
    max_shift = int(s.max_shift * length)
    if max_shift:
        shift = jax.random.randint(k_shift, (), -max_shift, max_shift + 1)
        positions = jnp.arange(length)
        source = positions - shift
        inside = (source >= 0) & (source < length)
        audio = jnp.where(inside, jnp.take(audio, jnp.clip(source, 0, length - 1), axis=-1), 0)
    if s.gain_db:
        audio = audio * 10.0 ** (_uniform(k_gain, s.gain_db) / 20.0)
    if s.noise:
        rms = jnp.sqrt(jnp.mean(jnp.square(audio)) + 1e-12)
        audio = audio + s.noise * rms * jax.random.normal(k_noise, audio.shape, audio.dtype)
    if s.time_mask:
        audio = jnp.where(_span_mask(k_time, length, int(s.time_mask * length)), 0, audio)
    if s.freq_mask and audio.ndim == 2:
        bins = audio.shape[0]
        audio = jnp.where(_span_mask(k_freq, bins, min(s.freq_mask, bins))[:, None], 0, audio)
    return audio


def augment_audio(key: jax.Array, audio: jax.Array, settings: AudioAugment) -> jax.Array:
    """Waveforms (B, T) or spectrograms (B, F, T), each with its own draw from `key`."""
    if audio.ndim not in (2, 3):
        raise ConfigError(
            f"audio augmentation takes waveforms (B, T) or spectrograms (B, F, T), got shape "
            f"{audio.shape}; remove the audio settings or feed audio of those shapes"
        )
    keys = jax.random.split(key, audio.shape[0])
    return jax.vmap(lambda k, x: _augment_one_audio(k, x, settings))(keys, audio)


AUGMENTERS = {"image": augment_image, "audio": augment_audio}


def resolve_settings(strength: str | Mapping[str, object]) -> dict[str, object]:
    """`strength` ("weak", "strong", or {modality: ImageAugment | AudioAugment | dict of
    its fields}) as {modality: settings}; ConfigError for anything else."""
    if isinstance(strength, str):
        if strength not in STRENGTHS:
            raise ConfigError(
                f"unknown augmentation {strength!r}; valid: {', '.join(STRENGTHS)} or a dict "
                "{modality: settings}"
            )
        return dict(STRENGTHS[strength])
    settings = {}
    for modality, value in dict(strength).items():
        cls = {"image": ImageAugment, "audio": AudioAugment}.get(modality)
        if cls is None:
            raise ConfigError(
                f"cannot augment modality {modality!r}; valid: {', '.join(AUGMENTERS)}"
            )
        if isinstance(value, Mapping) or hasattr(value, "to_dict"):
            value = dict(value.to_dict() if hasattr(value, "to_dict") else value)
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ConfigError(
                    f"{modality} augmentation has no setting {unknown[0]!r}; valid: "
                    f"{', '.join(sorted(fields))}"
                )
            value = cls(**value)
        if not isinstance(value, cls):
            raise ConfigError(f"{modality} augmentation must be a {cls.__name__} or a dict")
        settings[modality] = value
    return settings


def augment_batch(
    key: jax.Array, batch: Mapping[str, jax.Array], strength: str | Mapping[str, object]
) -> dict[str, jax.Array]:
    """A copy of `batch` with each of its modalities that `strength` names augmented
    (`image` (B, H, W, C), `audio` (B, T) or (B, F, T)); every other key unchanged."""
    out = dict(batch)
    settings = resolve_settings(strength)
    for i, modality in enumerate(sorted(settings)):
        if modality in out:
            out[modality] = AUGMENTERS[modality](
                jax.random.fold_in(key, i), out[modality], settings[modality]
            )
    return out
