"""BERT and GPT-2 text encoders in Hugging Face transformers' layout (one tensor, one leaf).

- Text encoder "bert" (`BertModel`): word + position + token-type-0 embeddings, LayerNorm
  (eps 1e-12), post-LN blocks attending to the tokens of `text_mask`, exact GELU, then the
  pooler, tanh(dense(first token)): (B, width).
- Text encoder "gpt2" (`GPT2Model`): token + position embeddings, pre-LN causal blocks
  (also masking padding), tanh-approximated GELU ("gelu_new"), `ln_f`, then the last
  token of `text_mask` (as GPT2ForSequenceClassification pools): (B, width).

Both end with a fresh `projection` Dense to `features` (not in the checkpoint; the layouts
"hf_bert" and "hf_gpt2" let the converter leave it at its initial value), or return the
pooled (B, width) with `project=False`. Text (B, L) and text_mask (B, L) bool, L at most
`max_positions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.models.activations import gelu_exact
from crossjax.models.clip_towers import check_text, multi_head_attention
from crossjax.models.encoders import TEXT_ENCODERS


class _BertSelfAttention(nn.Module):
    """`attention.self`: separate query/key/value Dense layers. (B, L, W) -> (B, L, W)."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        w = x.shape[-1]
        q, k, v = (nn.Dense(w, dtype=self.dtype, name=n)(x) for n in ("query", "key", "value"))
        return multi_head_attention(q, k, v, self.num_heads, mask)


class _DenseAddNorm(nn.Module):
    """BERT's `*.output`: LayerNorm(residual + dense(x)), eps 1e-12."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        y = nn.Dense(self.features, dtype=self.dtype, name="dense")(x)
        return nn.LayerNorm(1e-12, dtype=self.dtype, name="LayerNorm")(residual + y)


class _BertAttention(nn.Module):
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        y = _BertSelfAttention(self.num_heads, self.dtype, name="self")(x, mask)
        return _DenseAddNorm(x.shape[-1], self.dtype, name="output")(y, x)


class _Dense(nn.Module):
    """A module holding one Dense named `dense` (BERT's `intermediate`, `pooler`)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.features, dtype=self.dtype, name="dense")(x)


class _BertLayer(nn.Module):
    """One post-LN BERT block: x (B, L, W), mask (B, 1, 1, L) -> (B, L, W)."""

    num_heads: int
    intermediate: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = _BertAttention(self.num_heads, self.dtype, name="attention")(x, mask)
        y = _Dense(self.intermediate, self.dtype, name="intermediate")(x)
        return _DenseAddNorm(x.shape[-1], self.dtype, name="output")(gelu_exact(y), x)


class _BertEmbeddings(nn.Module):
    vocab_size: int
    width: int
    max_positions: int
    type_vocab_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text: jax.Array) -> jax.Array:
        def embed(n, name):
            return nn.Embed(n, self.width, dtype=self.dtype, name=name)

        x = embed(self.vocab_size, "word_embeddings")(text)
        x = x + embed(self.max_positions, "position_embeddings")(jnp.arange(text.shape[1]))
        x = x + embed(self.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(text))
        return nn.LayerNorm(1e-12, dtype=self.dtype, name="LayerNorm")(x)


class _Layers(nn.Module):
    """BERT's `encoder`: `layer_<i>` blocks applied in turn. (B, L, W) -> (B, L, W)."""

    layers: int
    num_heads: int
    intermediate: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        for i in range(self.layers):
            x = _BertLayer(self.num_heads, self.intermediate, self.dtype, name=f"layer_{i}")(
                x, mask
            )
        return x


@TEXT_ENCODERS.register("bert")
class BertTextEncoder(nn.Module):
    """Hugging Face `BertModel`: text (B, L), text_mask (B, L) -> (B, features)."""

    vocab_size: int
    width: int = 768
    layers: int = 12
    num_heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    project: bool = True
    features: int = 768
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless heads divide the width and L <= max_positions."""
        check_text(self.width, self.num_heads, input_shape[0], self.max_positions, "max_positions")

    @nn.compact
    def __call__(self, text: jax.Array, text_mask: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(text, 2)
        chex.assert_equal_shape([text, text_mask])
        x = _BertEmbeddings(
            self.vocab_size, self.width, self.max_positions, self.type_vocab_size, self.dtype,
            name="embeddings",
        )(text)  # fmt: skip
        mask = text_mask.astype(bool)[:, None, None, :]
        x = _Layers(self.layers, self.num_heads, self.intermediate, self.dtype, name="encoder")(
            x, mask
        )
        pooled = jnp.tanh(_Dense(self.width, self.dtype, name="pooler")(x[:, 0]))
        if not self.project:
            return pooled
        return nn.Dense(self.features, dtype=self.dtype, name="projection")(pooled)


class _GPT2Attention(nn.Module):
    """`attn`: fused `c_attn` (W -> 3W) and `c_proj`. x (B, L, W), mask (B, 1, L, L)."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        w = x.shape[-1]
        qkv = nn.Dense(3 * w, dtype=self.dtype, name="c_attn")(x)
        y = multi_head_attention(*jnp.split(qkv, 3, axis=-1), self.num_heads, mask)
        return nn.Dense(w, dtype=self.dtype, name="c_proj")(y)


class _GPT2MLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = x.shape[-1]
        y = nn.gelu(nn.Dense(4 * w, dtype=x.dtype, name="c_fc")(x), approximate=True)
        return nn.Dense(w, dtype=x.dtype, name="c_proj")(y)


class _GPT2Block(nn.Module):
    """Pre-LN block `h_<i>`: x + attn(ln_1(x)), x + mlp(ln_2(x)). (B, L, W) -> (B, L, W)."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        ln = lambda name: nn.LayerNorm(1e-5, dtype=self.dtype, name=name)  # noqa: E731
        x = x + _GPT2Attention(self.num_heads, self.dtype, name="attn")(ln("ln_1")(x), mask)
        return x + _GPT2MLP(name="mlp")(ln("ln_2")(x))


@TEXT_ENCODERS.register("gpt2")
class GPT2TextEncoder(nn.Module):
    """Hugging Face `GPT2Model`: text (B, L), text_mask (B, L) -> (B, features)."""

    vocab_size: int
    width: int = 768
    layers: int = 12
    num_heads: int = 12
    max_positions: int = 1024
    project: bool = True
    features: int = 768
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless heads divide the width and L <= max_positions."""
        check_text(self.width, self.num_heads, input_shape[0], self.max_positions, "max_positions")

    @nn.compact
    def __call__(self, text: jax.Array, text_mask: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(text, 2)
        chex.assert_equal_shape([text, text_mask])
        valid = text_mask.astype(bool)
        x = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="wte")(text)
        x = x + nn.Embed(self.max_positions, self.width, dtype=self.dtype, name="wpe")(
            jnp.arange(text.shape[1])
        )
        mask = nn.combine_masks(
            nn.make_causal_mask(text, dtype=bool), valid[:, None, None, :], dtype=bool
        )
        for i in range(self.layers):
            x = _GPT2Block(self.num_heads, self.dtype, name=f"h_{i}")(x, mask)
        x = nn.LayerNorm(1e-5, dtype=self.dtype, name="ln_f")(x)
        last = jnp.maximum(jnp.sum(valid, axis=1) - 1, 0)
        pooled = x[jnp.arange(x.shape[0]), last]
        if not self.project:
            return pooled
        return nn.Dense(self.features, dtype=self.dtype, name="projection")(pooled)
