"""Per-modality encoders: one input modality (B, ...) -> an embedding (B, features).

One registry per modality names the encoders a config can choose
(`crossjax.models.modality_encoders` builds them for every model family; a name
"package.module:Class" imports your own module with the same fields):
- `IMAGE_ENCODERS`: `image` (B, H, W, C) -> (B, features): "mlp", "cnn" (here),
  "vit" (`crossjax.models.transformer`). `GridCNNImageEncoder` keeps a grid of cells
  (B, N, features) for a decoder to attend over.
- `TEXT_ENCODERS`: `text` (B, L) int32 and `text_mask` (B, L) bool -> (B, features):
  "bow" (here), "transformer", "lstm", "gru" (`crossjax.models.recurrent`).
- `AUDIO_ENCODERS`: a raw waveform `audio` (B, T) -> (B, features): "cnn" (here).

An encoder may define `check(input_shape)`, raising ValueError when its fields do not
fit the per-example input shape (no batch dim); the builder turns that into a
ConfigError before the first step. All compute in `dtype`; params stay float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossjax.models.conv import Conv, map_batch_blocks, pyramid_blocks
from crossjax.registry import Registry

IMAGE_ENCODERS: Registry[type[nn.Module]] = Registry("image encoder")
TEXT_ENCODERS: Registry[type[nn.Module]] = Registry("text encoder")
AUDIO_ENCODERS: Registry[type[nn.Module]] = Registry("audio encoder")

_LOG_EPS = 1e-6


class MLP(nn.Module):
    """Dense layers with ReLU between them: (B, D_in) -> (B, features[-1])."""

    features: Sequence[int]
    activate_final: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.features):
            x = nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x)
            if i < len(self.features) - 1 or self.activate_final:
                x = nn.relu(x)
        return x


@IMAGE_ENCODERS.register("mlp")
class MLPImageEncoder(nn.Module):
    """Flattened pixels through an MLP: image (B, H, W, C) -> (B, features)."""

    hidden: Sequence[int] = (256,)
    features: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(image, 4)
        x = image.reshape(image.shape[0], -1).astype(self.dtype)
        return MLP((*self.hidden, self.features), dtype=self.dtype)(x)


@IMAGE_ENCODERS.register("cnn")
class CNNImageEncoder(nn.Module):
    """3x3 conv + ReLU + 2x2 average pool per entry of `channels`, then global mean pool
    and a Dense layer: image (B, H, W, C) -> (B, features). Works for any H, W.

    pool: "mean" (global mean pool: any H, W) or "flatten" (the whole last conv map, as
    the flax examples' MNIST CNN: conv32-conv64-dense256). activate_final: ReLU after the
    Dense layer (the flax CNN's dense256 is followed by one before the classifier head).

    batch_blocks: the conv stack runs on blocks of examples whose activations fit in
    cache ("auto": on CPU only; 1 = off; see crossjax.models.conv.map_batch_blocks).
    """

    channels: Sequence[int] = (32, 64)
    features: int = 128
    conv_impl: str = "xla"  # or "patches": see crossjax.models.conv
    batch_blocks: int | str = "auto"
    pool: str = "mean"  # or "flatten"
    activate_final: bool = False
    dtype: Any = jnp.float32

    def check(self, input_shape: tuple[int, ...]) -> None:
        if self.pool not in ("mean", "flatten"):
            raise ValueError(f"has pool={self.pool!r}; valid: mean, flatten")

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(image, 4)
        convs = [
            Conv(width, (3, 3), impl=self.conv_impl, dtype=self.dtype) for width in self.channels
        ]

        def stack(x: jax.Array) -> jax.Array:
            for conv in convs:
                x = nn.relu(conv(x))
                # SAME padding in the pool so sides of size 1 survive.
                x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
            return x

        x = image.astype(self.dtype)
        blocks = pyramid_blocks(x.shape, self.channels, self.dtype, self.batch_blocks)
        x = map_batch_blocks(stack, x, blocks)
        if self.pool == "flatten":
            x = x.reshape(x.shape[0], -1)
        else:
            x = jnp.mean(x, axis=(1, 2))  # global pool keeps the head independent of H, W
        x = nn.Dense(self.features, dtype=self.dtype)(x)
        return nn.relu(x) if self.activate_final else x


class GridCNNImageEncoder(nn.Module):
    """A conv map for a decoder to attend over: 3x3 conv + ReLU per entry of `channels`,
    with a 2x2 average pool after each but the last (so the last layer's larger receptive
    field is centred on every cell); each cell's features and its (row, column)
    coordinates in [-1, 1] then go through one Dense layer:
    image (B, H, W, C) -> (B, N = h * w, features), h = ceil(H / 2^(n-1)), n = len(channels).

    The coordinates make an attention context carry where it looked (a linear function
    of the attention-weighted centroid), which "left of" / "above" need; with learned
    position embeddings instead, captions swapped the two objects of 43% of the
    two-object scenes.
    """

    channels: Sequence[int] = (32, 64, 128)
    features: int = 128
    batch_blocks: int | str = "auto"  # see crossjax.models.conv.map_batch_blocks
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(image, 4)
        convs = [nn.Conv(width, (3, 3), dtype=self.dtype) for width in self.channels]

        def stack(x: jax.Array) -> jax.Array:
            for i, conv in enumerate(convs):
                if i:
                    x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
                x = nn.relu(conv(x))
            return x

        x = image.astype(self.dtype)
        blocks = pyramid_blocks(x.shape, self.channels, self.dtype, self.batch_blocks)
        x = map_batch_blocks(stack, x, blocks)
        b, h, w, _ = x.shape
        rows, cols = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
        coords = jnp.broadcast_to(jnp.stack([rows, cols], axis=-1), (b, h, w, 2))
        x = jnp.concatenate([x, coords.astype(self.dtype)], axis=-1).reshape(b, h * w, -1)
        return nn.Dense(self.features, dtype=self.dtype)(x)


@TEXT_ENCODERS.register("bow")
class BagOfWordsTextEncoder(nn.Module):
    """Word embeddings, masked mean over tokens, then Dense: text (B, L) -> (B, features).

    Positions where `text_mask` is False never influence the result (their ids are not
    even looked up), so padding and out-of-range ids there are harmless. A row with no
    unmasked token pools to zeros.
    """

    vocab_size: int
    embed_dim: int = 64
    features: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text: jax.Array, text_mask: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(text, 2)
        chex.assert_equal_shape([text, text_mask])
        mask = text_mask.astype(bool)
        ids = jnp.where(mask, text, 0)
        embedded = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(ids)
        embedded = jnp.where(mask[..., None], embedded, 0)
        count = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1).astype(self.dtype)
        pooled = jnp.sum(embedded, axis=1) / count
        return nn.Dense(self.features, dtype=self.dtype)(pooled)


def num_frames(num_samples: int, frame_length: int, hop_length: int) -> int:
    """Frames `log_spectrogram` makes from `num_samples` samples (no padding)."""
    if num_samples < frame_length:
        raise ValueError(
            f"audio of {num_samples} samples is shorter than one frame ({frame_length})"
        )
    return 1 + (num_samples - frame_length) // hop_length


def check_waveform(input_shape: Sequence[int], frame_length: int) -> None:
    """ValueError unless `input_shape` is a waveform (T,) of at least `frame_length` samples."""
    if len(input_shape) != 1:
        raise ValueError(f"reads a waveform (T,) but the audio is {tuple(input_shape)}")
    if input_shape[0] < frame_length:
        raise ValueError(
            f"audio has {input_shape[0]} samples, fewer than frame_length={frame_length}; "
            f"valid: frame_length <= {input_shape[0]}"
        )


def hann_window(frame_length: int) -> np.ndarray:
    """Periodic Hann window (as scipy.signal.get_window("hann", N)): (frame_length,)."""
    n = np.arange(frame_length)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / frame_length)).astype(np.float32)


def log_spectrogram(audio: jax.Array, frame_length: int, hop_length: int) -> jax.Array:
    """Log-magnitude STFT of a waveform: audio (B, T) -> (B, frames, frame_length // 2 + 1).

    Frames start every `hop_length` samples with no padding, so
    frames = 1 + (T - frame_length) // hop_length; each frame is multiplied by a periodic
    Hann window before `jnp.fft.rfft`; the value is log(1e-6 + |X|).
    """
    chex.assert_rank(audio, 2)
    frames = num_frames(audio.shape[1], frame_length, hop_length)
    index = np.arange(frames)[:, None] * hop_length + np.arange(frame_length)[None, :]
    framed = audio.astype(jnp.float32)[:, index] * hann_window(frame_length)
    spectrum = jnp.fft.rfft(framed, axis=-1)
    return jnp.log(_LOG_EPS + jnp.abs(spectrum))


@AUDIO_ENCODERS.register("cnn")
class AudioEncoder(nn.Module):
    """Log spectrogram then a temporal conv net: audio (B, T) -> (B, features).

    The spectrogram (B, frames, bins) is computed in float32 (see `log_spectrogram`) and
    layer-normalised per frame; frequency bins are the channels of 1-D convolutions over
    time (kernel `kernel_size`, ReLU), so the net keeps which frequencies are present, and
    a max over frames makes it insensitive to when the sound starts. T must be at least
    `frame_length`. (A 2-D conv over the spectrogram image was 13x slower per step on
    CPU, where XLA's 2-D convolution backward pass is slow, and pooled away frequency.)
    """

    frame_length: int = 256
    hop_length: int = 128
    channels: Sequence[int] = (64, 64)
    kernel_size: int = 3
    features: int = 128
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless the audio is a waveform (T,) with T >= frame_length."""
        check_waveform(input_shape, self.frame_length)

    @nn.compact
    def __call__(self, audio: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(audio, 2)
        spec = log_spectrogram(audio, self.frame_length, self.hop_length)
        x = nn.LayerNorm(dtype=self.dtype)(spec.astype(self.dtype))
        for width in self.channels:
            x = nn.relu(nn.Conv(width, (self.kernel_size,), dtype=self.dtype)(x))
        x = jnp.max(x, axis=1)
        return nn.Dense(self.features, dtype=self.dtype)(x)
