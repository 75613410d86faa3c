"""CLIP towers in open_clip's layout, so open_clip checkpoints convert one tensor to one leaf.

- Image encoder "open_clip_vit" (open_clip's `VisionTransformer`): image (B, H, W, C) ->
  patches by a bias-free conv, a class token and learned positions, `ln_pre`, pre-LN
  residual attention blocks, `ln_post` on the class token, then `@ proj`: (B, features).
- Text encoder "open_clip_text" (open_clip's `CLIP` text side): text (B, L) -> token and
  position embeddings (L <= context_length), causal blocks, `ln_final`, the token with the
  highest id (the end-of-text token of CLIP's tokenizer), then `@ text_projection`:
  (B, features). `text_mask` is accepted for the encoder interface; as in open_clip, the
  causal mask alone keeps later (padding) tokens out of the pooled one.

Names follow open_clip (`transformer.resblocks.0.attn.in_proj_weight` ->
`transformer/resblocks_0/attn/in_proj/kernel`); LayerNorm eps is torch's 1e-5 and GELU
is exact (or QuickGELU, x * sigmoid(1.702 x), with `quick_gelu=True`, as OpenAI's
weights need). Images arrive already normalised with the checkpoint's mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.models.activations import gelu_exact
from crossjax.models.encoders import IMAGE_ENCODERS, TEXT_ENCODERS
from crossjax.models.transformer import PatchEmbed

_EMBED_INIT = nn.initializers.normal(stddev=0.02)


def _layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name)


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


def multi_head_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int, mask: jax.Array | None = None
) -> jax.Array:
    """Scaled dot-product attention over heads split from the last axis: q (B, Q, W),
    k and v (B, K, W), mask broadcastable to (B, heads, Q, K) (True = attend) -> (B, Q, W).
    Softmax in float32."""
    b, n, width = q.shape
    head = width // num_heads
    q, k, v = (t.reshape(b, t.shape[1], num_heads, head) for t in (q, k, v))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head).astype(q.dtype)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, width)


class FusedSelfAttention(nn.Module):
    """torch.nn.MultiheadAttention self-attention with one fused `in_proj` (W -> 3W) and
    `out_proj`: x (B, N, W), optional boolean mask broadcastable to (B, heads, N, N)."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        width = x.shape[-1]
        qkv = nn.Dense(3 * width, dtype=self.dtype, name="in_proj")(x)
        y = multi_head_attention(*jnp.split(qkv, 3, axis=-1), self.num_heads, mask)
        return nn.Dense(width, dtype=self.dtype, name="out_proj")(y)


class ResidualAttentionBlock(nn.Module):
    """open_clip's block: x + attn(ln_1(x)), then x + c_proj(gelu(c_fc(ln_2(x)))).
    x (B, N, W) -> (B, N, W)."""

    num_heads: int
    mlp_ratio: float = 4.0
    quick_gelu: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        width = x.shape[-1]
        attn = FusedSelfAttention(self.num_heads, self.dtype, name="attn")
        x = x + attn(_layer_norm("ln_1", self.dtype)(x), mask)
        y = _layer_norm("ln_2", self.dtype)(x)
        return x + MLP(int(width * self.mlp_ratio), self.quick_gelu, self.dtype, name="mlp")(y)


class MLP(nn.Module):
    """open_clip's `mlp`: c_proj(gelu(c_fc(x))), x (B, N, W) -> (B, N, W)."""

    hidden: int
    quick_gelu: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Dense(self.hidden, dtype=self.dtype, name="c_fc")(x)
        y = quick_gelu(y) if self.quick_gelu else gelu_exact(y)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="c_proj")(y)


class Transformer(nn.Module):
    """`layers` residual attention blocks named `resblocks_<i>`: (B, N, W) -> (B, N, W)."""

    layers: int
    num_heads: int
    mlp_ratio: float = 4.0
    quick_gelu: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        for i in range(self.layers):
            x = ResidualAttentionBlock(
                self.num_heads, self.mlp_ratio, self.quick_gelu, self.dtype, name=f"resblocks_{i}"
            )(x, mask)
        return x


def check_heads(width: int, heads: int) -> None:
    """ValueError unless `heads` attention heads divide `width` (shared by the towers)."""
    if heads < 1 or width % heads:
        raise ValueError(f"width={width} is not divisible by num_heads={heads}")


def check_text(width: int, heads: int, length: int, limit: int, limit_name: str) -> None:
    """ValueError unless heads divide the width and the text length L <= the position
    table's size (`limit_name`=`limit`, e.g. context_length=77)."""
    check_heads(width, heads)
    if length > limit:
        raise ValueError(f"text length {length} exceeds {limit_name}={limit}")


def check_patches(input_shape: Sequence[int], patch_size: int) -> None:
    """ValueError unless the image is (H, W, C) with H, W multiples of `patch_size`."""
    if len(input_shape) != 3 or input_shape[0] % patch_size or input_shape[1] % patch_size:
        raise ValueError(
            f"image {tuple(input_shape)} is not (H, W, C) with H and W multiples of "
            f"patch_size={patch_size}"
        )


@IMAGE_ENCODERS.register("open_clip_vit")
class CLIPVisionTransformer(nn.Module):
    """open_clip's ViT image tower: image (B, H, W, C) -> (B, features). See module doc."""

    patch_size: int = 32
    width: int = 768
    layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    quick_gelu: bool = False
    features: int = 512
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless the image is (H, W, C) with H, W multiples of patch_size."""
        check_heads(self.width, self.num_heads)
        check_patches(input_shape, self.patch_size)

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(image, 4)
        p = self.patch_size
        # Row-major patches, as torch's conv1 then flatten(2).
        x = PatchEmbed(self.width, p, use_bias=False, dtype=self.dtype, name="conv1")(image)
        b = x.shape[0]
        cls = self.param("class_embedding", _EMBED_INIT, (self.width,))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.width)), x], 1)
        pos = self.param("positional_embedding", _EMBED_INIT, (x.shape[1], self.width))
        x = _layer_norm("ln_pre", self.dtype)(x + pos.astype(x.dtype))
        x = Transformer(
            self.layers,
            self.num_heads,
            self.mlp_ratio,
            self.quick_gelu,
            self.dtype,
            name="transformer",
        )(x)
        x = _layer_norm("ln_post", self.dtype)(x[:, 0])
        proj = self.param("proj", _EMBED_INIT, (self.width, self.features))
        return x @ proj.astype(x.dtype)


@TEXT_ENCODERS.register("open_clip_text")
class CLIPTextTransformer(nn.Module):
    """open_clip's CLIP text tower: text (B, L), text_mask (B, L) -> (B, features)."""

    vocab_size: int
    context_length: int = 77
    width: int = 512
    layers: int = 12
    num_heads: int = 8
    mlp_ratio: float = 4.0
    quick_gelu: bool = False
    features: int = 512
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless heads divide the width and L <= context_length."""
        check_text(
            self.width, self.num_heads, input_shape[0], self.context_length, "context_length"
        )

    @nn.compact
    def __call__(
        self, text: jax.Array, text_mask: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        chex.assert_rank(text, 2)
        length = text.shape[1]
        x = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="token_embedding")(text)
        pos = self.param("positional_embedding", _EMBED_INIT, (self.context_length, self.width))
        x = x + pos[:length].astype(x.dtype)
        causal = nn.make_causal_mask(text, dtype=bool)  # (B, 1, L, L)
        x = Transformer(
            self.layers,
            self.num_heads,
            self.mlp_ratio,
            self.quick_gelu,
            self.dtype,
            name="transformer",
        )(x, causal)
        x = _layer_norm("ln_final", self.dtype)(x)
        x = x[jnp.arange(x.shape[0]), jnp.argmax(text, axis=-1)]
        proj = self.param("text_projection", _EMBED_INIT, (self.width, self.features))
        return x @ proj.astype(x.dtype)
