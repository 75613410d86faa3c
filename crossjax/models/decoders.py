"""Decoders per modality: a latent z (B, Z) -> the raw output a likelihood reads.

Outputs are float32 and computed in `dtype`; what they mean (logits, mean, location) is
decided by the likelihood in `crossjax.losses.generative.nll`. `DEFAULT_LIKELIHOOD` says
which one fits each modality. Audio is decoded as its log spectrogram (`audio_target`),
the representation `AudioEncoder` reads: a raw noisy waveform is not worth modelling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models.encoders import MLP, log_spectrogram, num_frames

# "label": the class as a modality of a multimodal VAE (crossjax.models.label_modality).
DEFAULT_LIKELIHOOD = {
    "image": "bernoulli",
    "text": "categorical",
    "audio": "laplace",
    "label": "categorical",
}
# How a decoder output is read (crossjax.losses.generative.nll scores it).
LIKELIHOODS = ("bernoulli", "gaussian", "laplace", "categorical")


def check_likelihood(likelihood: str, owner: str) -> None:
    """ConfigError naming `owner` (e.g. "loss 'neg_elbo'") unless `likelihood` is known."""
    if likelihood not in LIKELIHOODS:
        raise ConfigError(f"{owner} has likelihood={likelihood!r}; valid: {', '.join(LIKELIHOODS)}")


def likelihood_mean(likelihood: str, output: jax.Array) -> jax.Array:
    """The point estimate to look at from a decoder output: sigmoid(logits) for bernoulli,
    `output` for gaussian/laplace (same shape), argmax ids int32 (B, ...) over the last
    axis of the (B, ..., V) logits for categorical."""
    check_likelihood(likelihood, "likelihood_mean")
    if likelihood == "bernoulli":
        return jax.nn.sigmoid(output)
    if likelihood == "categorical":
        return jnp.argmax(output, axis=-1).astype(jnp.int32)
    return output


IMAGE_DECODER_KINDS = ("mlp", "deconv")
AUDIO_FRAME_LENGTH = 256
AUDIO_HOP_LENGTH = 128


def spectrogram_shape(num_samples: int, frame_length: int, hop_length: int) -> tuple[int, int]:
    """(frames, bins) of `log_spectrogram` for a waveform of `num_samples` samples."""
    return num_frames(num_samples, frame_length, hop_length), frame_length // 2 + 1


def audio_target(
    audio: jax.Array, frame_length: int = AUDIO_FRAME_LENGTH, hop_length: int = AUDIO_HOP_LENGTH
) -> jax.Array:
    """What an audio likelihood scores: audio (B, T) -> log spectrogram (B, frames, bins)."""
    return log_spectrogram(audio, frame_length, hop_length)


def _mlp_decode(z: jax.Array, hidden: Sequence[int], shape: Sequence[int], dtype: Any):
    """z (B, Z) -> (B, *shape) float32 through an MLP over `hidden` and a Dense to prod(shape)."""
    chex.assert_rank(z, 2)
    x = MLP((*hidden, math.prod(shape)), dtype=dtype)(z.astype(dtype))
    return x.reshape((z.shape[0], *shape)).astype(jnp.float32)


class ImageDecoder(nn.Module):
    """z (B, Z) -> (B, H, W, C) float32, `output_shape` = (H, W, C).

    kind "mlp": Dense layers over `hidden`, then a Dense to H*W*C.
    kind "deconv": a Dense (+ ReLU) to a ceil(H / 2^n) x ceil(W / 2^n) grid of hidden[0]
    channels, n = len(hidden) stride-2 `nn.ConvTranspose` stages (4x4, ReLU) with
    hidden[i] channels, a final 3x3 conv to C channels, cropped to H x W (two stages:
    7 -> 28, 8 -> 32, 2 -> 8; odd sizes are cropped, e.g. 2 -> 8 -> 7).
    """

    output_shape: Sequence[int]
    hidden: Sequence[int] = (256,)
    kind: str = "mlp"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        if self.kind == "mlp":
            return _mlp_decode(z, self.hidden, self.output_shape, self.dtype)
        if self.kind != "deconv":
            raise ConfigError(
                f"ImageDecoder has kind={self.kind!r}; valid: {', '.join(IMAGE_DECODER_KINDS)}"
            )
        if not self.hidden:
            raise ConfigError("ImageDecoder(kind='deconv') needs at least one hidden stage")
        chex.assert_rank(z, 2)
        height, width, channels = self.output_shape
        scale = 2 ** len(self.hidden)
        grid = (-(-height // scale), -(-width // scale), self.hidden[0])
        x = nn.Dense(math.prod(grid), dtype=self.dtype)(z.astype(self.dtype))
        x = nn.relu(x).reshape((z.shape[0], *grid))
        for width_i in self.hidden:
            x = nn.ConvTranspose(width_i, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(
                x
            )
            x = nn.relu(x)
        x = nn.Conv(channels, (3, 3), padding="SAME", dtype=self.dtype)(x)
        return x[:, :height, :width, :].astype(jnp.float32)


class TextDecoder(nn.Module):
    """z (B, Z) -> logits (B, max_len, vocab_size) float32, all positions at once.

    Non-autoregressive: an MLP over `hidden` then a Dense to L*V. Every position is
    predicted, padding id 0 included, so the length of the text is generated too.
    """

    max_len: int
    vocab_size: int
    hidden: Sequence[int] = (256,)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        return _mlp_decode(z, self.hidden, (self.max_len, self.vocab_size), self.dtype)


class AudioDecoder(nn.Module):
    """z (B, Z) -> log spectrogram (B, frames, bins) float32, `output_shape` = (frames, bins).

    An MLP over `hidden` then a Dense to frames*bins; compare against `audio_target`.
    """

    output_shape: Sequence[int]
    hidden: Sequence[int] = (256,)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        return _mlp_decode(z, self.hidden, self.output_shape, self.dtype)


def _is_image(modality: str) -> bool:
    return modality == "image" or modality.startswith("image_")


def decoded_shape(modality: str, spec: DataSpec) -> tuple[int, ...]:
    """Per-example shape a decoder of `modality` outputs: (H, W, C) for images, (L, V)
    logits for text, (frames, bins) spectrogram for audio. ConfigError when unknown."""
    if _is_image(modality) and spec.image_shape is not None:
        return tuple(spec.image_shape)
    if modality == "text" and spec.max_text_len and spec.vocab_size:
        return spec.max_text_len, spec.vocab_size
    if modality == "audio" and spec.audio_shape is not None:
        if len(spec.audio_shape) != 1 or spec.audio_shape[0] < AUDIO_FRAME_LENGTH:
            raise ConfigError(
                f"audio {tuple(spec.audio_shape)} has no log spectrogram target of "
                f"{AUDIO_FRAME_LENGTH}-sample frames; valid: a waveform (T,), T >= "
                f"{AUDIO_FRAME_LENGTH}"
            )
        return spectrogram_shape(spec.audio_shape[0], AUDIO_FRAME_LENGTH, AUDIO_HOP_LENGTH)
    raise ConfigError(
        f"no decoder for modality {modality!r} with this dataset; "
        "valid: image, image_<view>, text, audio (present in the data spec)"
    )


def build_decoder(
    modality: str,
    spec: DataSpec,
    *,
    hidden: Sequence[int],
    kind: str = "mlp",
    dtype: Any = jnp.float32,
) -> nn.Module:
    """The decoder of `modality` sized from `spec`: "image"/"image_<view>" ->
    `ImageDecoder(spec.image_shape)`, "text" -> `TextDecoder(spec.max_text_len,
    spec.vocab_size)`, "audio" -> `AudioDecoder` of the (256, 128) log spectrogram of
    spec.audio_shape[0] samples. `kind` ("mlp" | "deconv") applies to images only.
    ConfigError for a modality without a decoder or a bad kind."""
    if kind not in IMAGE_DECODER_KINDS or (kind != "mlp" and not _is_image(modality)):
        valid = IMAGE_DECODER_KINDS if _is_image(modality) else ("mlp",)
        raise ConfigError(
            f"decoder kind {kind!r} for modality {modality!r}; valid: {', '.join(valid)}"
        )
    shape = decoded_shape(modality, spec)
    hidden = tuple(hidden)
    if _is_image(modality):
        return ImageDecoder(shape, hidden, kind, dtype)
    if modality == "text":
        return TextDecoder(*shape, hidden=hidden, dtype=dtype)
    return AudioDecoder(shape, hidden, dtype)
