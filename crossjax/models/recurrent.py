"""LSTM/GRU cells and the recurrent text encoders "lstm" and "gru" (in `TEXT_ENCODERS`).

Text encoders take text (B, L) int32 and text_mask (B, L) bool and return (B, features);
`crossjax.models.modality_encoders` builds them for every model family. The RNN decoder
and the models that generate text are in `crossjax.models.rnn`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.errors import ConfigError
from crossjax.models.encoders import TEXT_ENCODERS

CELLS = ("lstm", "gru")


def make_cell(cell: str, hidden: int, dtype: Any, name: str | None = None) -> nn.RNNCellBase:
    """An `nn.OptimizedLSTMCell` ("lstm") or `nn.GRUCell` ("gru") with `hidden` units."""
    if cell == "lstm":
        return nn.OptimizedLSTMCell(hidden, dtype=dtype, name=name)
    if cell == "gru":
        return nn.GRUCell(hidden, dtype=dtype, name=name)
    raise ConfigError(f"rnn cell {cell!r} is unknown; valid: {', '.join(CELLS)}")


def hidden_of(carry: Any) -> jax.Array:
    """The output state h of an LSTM carry (c, h) or a GRU carry h."""
    return carry[1] if isinstance(carry, tuple) else carry


class RNNTextEncoder(nn.Module):
    """Embeddings -> (bi)directional LSTM/GRU over the real tokens -> final state -> Dense:
    text (B, L) int32, text_mask (B, L) bool -> (B, features).

    The mask must be a prefix (real tokens first, as `Vocabulary.encode` makes it); the
    RNN stops at each row's length, so padded positions never influence the result. A
    row with no real token encodes the zero initial state.
    """

    vocab_size: int
    embed_dim: int = 64
    hidden: int = 128
    features: int = 128
    bidirectional: bool = False
    dtype: Any = jnp.float32
    cell: ClassVar[str] = "lstm"

    @nn.compact
    def __call__(self, text: jax.Array, text_mask: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(text, 2)
        chex.assert_equal_shape([text, text_mask])
        mask = text_mask.astype(bool)
        lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
        x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(jnp.where(mask, text, 0))
        forward = nn.RNN(make_cell(self.cell, self.hidden, self.dtype), return_carry=True)
        carry, _ = forward(x, seq_lengths=lengths)
        h = hidden_of(carry)
        if self.bidirectional:
            backward = nn.RNN(
                make_cell(self.cell, self.hidden, self.dtype),
                return_carry=True,
                reverse=True,
                keep_order=True,
            )
            back_carry, _ = backward(x, seq_lengths=lengths)
            h = jnp.concatenate([h, hidden_of(back_carry)], axis=-1)
        # flax picks the carry at index length - 1, which for length 0 is the last step.
        h = jnp.where(lengths[:, None] > 0, h, 0)
        return nn.Dense(self.features, dtype=self.dtype)(h)


@TEXT_ENCODERS.register("lstm")
class LSTMTextEncoder(RNNTextEncoder):
    """`RNNTextEncoder` with LSTM cells."""

    cell: ClassVar[str] = "lstm"


@TEXT_ENCODERS.register("gru")
class GRUTextEncoder(RNNTextEncoder):
    """`RNNTextEncoder` with GRU cells."""

    cell: ClassVar[str] = "gru"
