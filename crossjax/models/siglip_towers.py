"""SigLIP towers in Hugging Face transformers' layout (`SiglipVisionModel`,
`SiglipTextModel`), so their checkpoints convert one tensor to one leaf.

- Image encoder "siglip_vit": image (B, H, W, C) -> patch conv (with bias) + learned
  positions (no class token), pre-LN blocks, `post_layernorm`, then the attention-pooling
  `head` (a learned probe attends over the tokens, plus an MLP residual): (B, width).
  SigLIP has no image projection: with `features != width` a fresh `projection` Dense
  (not in the checkpoint; layout "hf_siglip_vision" keeps its initial value) maps to
  (B, features).
- Text encoder "siglip_text": text (B, L) -> token + position embeddings, bidirectional
  pre-LN blocks with no padding mask (SigLIP pads to its full length and was trained so),
  `final_layer_norm`, the LAST position, then the `head` Dense: (B, features).

GELU is the tanh approximation, LayerNorm eps 1e-6, as in the released configs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.models.clip_towers import (
    check_heads,
    check_patches,
    check_text,
    multi_head_attention,
)
from crossjax.models.encoders import IMAGE_ENCODERS, TEXT_ENCODERS
from crossjax.models.transformer import PatchEmbed

_EPS = 1e-6


def _ln(name: str, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(_EPS, dtype=dtype, name=name)


class _MLP(nn.Module):
    """`mlp`: fc2(gelu_tanh(fc1(x))). (B, N, W) -> (B, N, W)."""

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x), approximate=True)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class _SelfAttention(nn.Module):
    """`self_attn`: q_proj, k_proj, v_proj, out_proj. (B, N, W) -> (B, N, W), no mask."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = x.shape[-1]
        q, k, v = (nn.Dense(w, dtype=self.dtype, name=f"{n}_proj")(x) for n in "qkv")
        y = multi_head_attention(q, k, v, self.num_heads)
        return nn.Dense(w, dtype=self.dtype, name="out_proj")(y)


class _Encoder(nn.Module):
    """`encoder`: `layers_<i>` pre-LN blocks. (B, N, W) -> (B, N, W)."""

    layers: int
    num_heads: int
    intermediate: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.layers):
            block = _Block(self.num_heads, self.intermediate, self.dtype, name=f"layers_{i}")
            x = block(x)
        return x


class _Block(nn.Module):
    num_heads: int
    intermediate: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        attn = _SelfAttention(self.num_heads, self.dtype, name="self_attn")
        x = x + attn(_ln("layer_norm1", self.dtype)(x))
        return x + _MLP(self.intermediate, self.dtype, name="mlp")(
            _ln("layer_norm2", self.dtype)(x)
        )


class _AttentionPoolingHead(nn.Module):
    """`head`: a learned `probe` attends over x (B, N, W) through torch-style
    `attention` (fused in_proj, out_proj); then + mlp(layernorm(.)). -> (B, W)."""

    num_heads: int
    intermediate: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, _, w = x.shape
        probe = self.param("probe", nn.initializers.normal(1.0), (1, 1, w))
        probe = jnp.broadcast_to(probe.astype(x.dtype), (b, 1, w))
        attention = _CrossAttention(self.num_heads, self.dtype, name="attention")
        y = attention(probe, x)
        y = y + _MLP(self.intermediate, self.dtype, name="mlp")(_ln("layernorm", self.dtype)(y))
        return y[:, 0]


class _CrossAttention(nn.Module):
    """torch.nn.MultiheadAttention with query != key = value: `in_proj` (W -> 3W; its
    first third projects the query, the rest keys and values) and `out_proj`."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query: jax.Array, x: jax.Array) -> jax.Array:
        w = x.shape[-1]
        in_proj = nn.Dense(3 * w, dtype=self.dtype, name="in_proj")
        q = in_proj(query)[..., :w]
        _, k, v = jnp.split(in_proj(x), 3, axis=-1)
        y = multi_head_attention(q, k, v, self.num_heads)
        return nn.Dense(w, dtype=self.dtype, name="out_proj")(y)


class _VisionEmbeddings(nn.Module):
    patch_size: int
    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        p = self.patch_size
        x = PatchEmbed(self.width, p, dtype=self.dtype, name="patch_embedding")(image)
        positions = nn.Embed(x.shape[1], self.width, dtype=self.dtype, name="position_embedding")
        return x + positions(jnp.arange(x.shape[1]))


@IMAGE_ENCODERS.register("siglip_vit")
class SiglipVisionTransformer(nn.Module):
    """HF `SiglipVisionModel` pooled output: image (B, H, W, C) -> (B, features)."""

    patch_size: int = 16
    width: int = 768
    layers: int = 12
    num_heads: int = 12
    intermediate: int = 3072
    features: int = 768
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless heads divide the width and patches tile the image."""
        check_heads(self.width, self.num_heads)
        check_patches(input_shape, self.patch_size)

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(image, 4)
        dt = self.dtype
        x = _VisionEmbeddings(self.patch_size, self.width, dt, name="embeddings")(image.astype(dt))
        x = _Encoder(self.layers, self.num_heads, self.intermediate, dt, name="encoder")(x)
        x = _ln("post_layernorm", dt)(x)
        x = _AttentionPoolingHead(self.num_heads, self.intermediate, dt, name="head")(x)
        if self.features == self.width:
            return x
        return nn.Dense(self.features, dtype=dt, name="projection")(x)


class _TextEmbeddings(nn.Module):
    vocab_size: int
    width: int
    max_positions: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text: jax.Array) -> jax.Array:
        tokens = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="token_embedding")
        positions = nn.Embed(
            self.max_positions, self.width, dtype=self.dtype, name="position_embedding"
        )
        return tokens(text) + positions(jnp.arange(text.shape[1]))


@TEXT_ENCODERS.register("siglip_text")
class SiglipTextTransformer(nn.Module):
    """HF `SiglipTextModel` pooled output: text (B, L), text_mask (unused) -> (B, features)."""

    vocab_size: int
    width: int = 768
    layers: int = 12
    num_heads: int = 12
    intermediate: int = 3072
    max_positions: int = 64
    features: int = 768
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless heads divide the width and L <= max_positions."""
        check_text(self.width, self.num_heads, input_shape[0], self.max_positions, "max_positions")

    @nn.compact
    def __call__(
        self, text: jax.Array, text_mask: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        chex.assert_rank(text, 2)
        dt = self.dtype
        x = _TextEmbeddings(self.vocab_size, self.width, self.max_positions, dt, name="embeddings")(
            text
        )
        x = _Encoder(self.layers, self.num_heads, self.intermediate, dt, name="encoder")(x)
        x = _ln("final_layer_norm", dt)(x)[:, -1]
        return nn.Dense(self.features, dtype=dt, name="head")(x)
