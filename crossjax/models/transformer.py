"""Small pre-LN transformer encoders: a text transformer and a ViT, for two-tower models.

`TransformerTextEncoder` takes `text` (B, L) int32 and `text_mask` (B, L) bool;
`ViTImageEncoder` (registered as image encoder "vit") takes `image` (B, H, W, C). Both
return (B, features), pooled by a masked mean over tokens or by a learned CLS token.
The text transformer is text encoder "transformer" in `TEXT_ENCODERS`. Position embeddings are learned for the length the
module is initialised with, so apply it to the same L (or H, W) as at init.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.errors import ConfigError
from crossjax.models.encoders import IMAGE_ENCODERS, TEXT_ENCODERS

POOLS = ("mean", "cls")
_EMBED_INIT = nn.initializers.normal(stddev=0.02)


def check_transformer_fields(width: int, num_heads: int, pool: str, owner: str) -> None:
    """ConfigError unless heads divide the width and `pool` is one of `POOLS`."""
    if width % num_heads:
        raise ConfigError(f"{owner}: width={width} is not divisible by num_heads={num_heads}")
    if pool not in POOLS:
        raise ConfigError(f"{owner} has pool={pool!r}; valid: {', '.join(POOLS)}")


class TransformerBlock(nn.Module):
    """Pre-LN block: x + MHA(LN(x)), then x + MLP(LN(x)). x (B, N, W), mask (B, N) bool."""

    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        width = x.shape[-1]
        # Padded tokens are neither attended to nor attend; a row with no token at all
        # attends uniformly (finite), and pooling then ignores it.
        attn_mask = None if mask is None else nn.make_attention_mask(mask, mask)
        y = nn.LayerNorm(dtype=self.dtype, name="ln_attn")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, deterministic=True, name="attn"
        )(y, y, mask=attn_mask)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(x)
        y = nn.Dense(int(self.mlp_ratio * width), dtype=self.dtype, name="mlp_in")(y)
        y = nn.Dense(width, dtype=self.dtype, name="mlp_out")(nn.gelu(y))
        return x + y


class _TokenEncoder(nn.Module):
    """Position embeddings, optional CLS token, blocks, final LN, pooling, projection.

    tokens (B, N, W), mask (B, N) bool or None (every token real) -> (B, features).
    """

    depth: int
    num_heads: int
    mlp_ratio: float
    pool: str
    features: int
    dtype: Any

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array | None) -> jax.Array:
        batch, length, width = tokens.shape
        if self.pool == "cls":
            cls = self.param("cls_token", _EMBED_INIT, (1, 1, width))
            tokens = jnp.concatenate(
                [jnp.broadcast_to(cls, (batch, 1, width)).astype(tokens.dtype), tokens], axis=1
            )
            if mask is not None:
                mask = jnp.concatenate([jnp.ones((batch, 1), bool), mask], axis=1)
        pos = self.param("pos_embedding", _EMBED_INIT, (tokens.shape[1], width))
        x = (tokens + pos[None]).astype(self.dtype)
        for i in range(self.depth):
            x = TransformerBlock(self.num_heads, self.mlp_ratio, self.dtype, name=f"block_{i}")(
                x, mask
            )
        x = nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
        if self.pool == "cls":
            pooled = x[:, 0]
        elif mask is None:
            pooled = jnp.mean(x, axis=1)
        else:  # masked mean; an empty row pools to zeros
            weights = mask.astype(self.dtype)[..., None]
            pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        return nn.Dense(self.features, dtype=self.dtype, name="proj")(pooled)


@TEXT_ENCODERS.register("transformer")
class TransformerTextEncoder(nn.Module):
    """Token + learned position embeddings, masked pre-LN self-attention, pooled:
    text (B, L) int32, text_mask (B, L) bool -> (B, features).

    Masked positions never influence the result (their ids are not looked up either).
    """

    vocab_size: int
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    pool: str = "mean"  # "mean" (masked mean over tokens) | "cls"
    features: int = 128
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless heads divide the width and `pool` is valid."""
        check_transformer_fields(self.width, self.num_heads, self.pool, "text transformer")

    @nn.compact
    def __call__(self, text: jax.Array, text_mask: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(text, 2)
        chex.assert_equal_shape([text, text_mask])
        self.check(text.shape[1:])
        mask = text_mask.astype(bool)
        ids = jnp.where(mask, text, 0)
        tokens = nn.Embed(self.vocab_size, self.width, embedding_init=_EMBED_INIT, name="embed")(
            ids
        )
        return _TokenEncoder(
            self.depth, self.num_heads, self.mlp_ratio, self.pool, self.features, self.dtype,
            name="encoder",
        )(tokens, mask)  # fmt: skip


def patchify(image: jax.Array, patch_size: int) -> jax.Array:
    """Non-overlapping patches by reshape: (B, H, W, C) -> (B, H/p * W/p, p * p * C).

    Patches are in row-major order; H and W must be multiples of p. (A reshape plus a
    Dense layer is the same linear map as a stride-p convolution, but runs as one matmul,
    which XLA on CPU does far faster than a convolution and its backward pass.)
    """
    b, h, w, c = image.shape
    p = patch_size
    if h % p or w % p:
        raise ConfigError(f"vit: image {h}x{w} is not divisible into {p}x{p} patches")
    x = image.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class PatchEmbed(nn.Module):
    """A p x p convolution at stride p (VALID), named and initialised as nn.Conv's (`kernel`
    (p, p, C, features), `bias`), so torch checkpoints' patch-embedding convs convert as
    before, computed as `patchify` and one matmul: (B, H, W, C) -> (B, H/p * W/p, features),
    which XLA on CPU runs faster than the convolution (README, the ViT-B/32 speed row)."""

    features: int
    patch_size: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        p, c = self.patch_size, image.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.features))
        kernel = kernel.astype(self.dtype).reshape(p * p * c, self.features)
        y = patchify(image.astype(self.dtype), p) @ kernel
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(
                self.dtype
            )
        return y


@IMAGE_ENCODERS.register("vit")
class ViTImageEncoder(nn.Module):
    """Vision transformer: patchify by reshape + Dense, learned position embeddings,
    pre-LN blocks, mean-pool or CLS: image (B, H, W, C) -> (B, features)."""

    patch_size: int = 4
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    pool: str = "mean"  # "mean" over patches | "cls"
    features: int = 128
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless heads divide the width, `pool` is valid and the image
        (H, W, C) splits into whole patches."""
        check_transformer_fields(self.width, self.num_heads, self.pool, "vit")
        height, width = input_shape[:2]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image {height}x{width} is not divisible into {self.patch_size}x"
                f"{self.patch_size} patches; valid: a patch_size that divides {height} and {width}"
            )

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(image, 4)
        check_transformer_fields(self.width, self.num_heads, self.pool, "vit")
        patches = patchify(image.astype(self.dtype), self.patch_size)
        tokens = nn.Dense(self.width, dtype=self.dtype, name="patch_embed")(patches)
        # Every patch is real: no attention mask, so XLA skips the masking work.
        return _TokenEncoder(
            self.depth, self.num_heads, self.mlp_ratio, self.pool, self.features, self.dtype,
            name="encoder",
        )(tokens, None)  # fmt: skip
