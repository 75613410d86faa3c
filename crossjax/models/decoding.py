"""Decoding of token sequences from a step function: greedy and beam search, jitted
with fixed shapes (a `lax.scan` over positions), with GNMT length normalisation.

A step function maps (state, previous ids (N,), position t) to (state, log-probs (N,
V)); `state` is any pytree whose leaves have the batch as leading axis. There is no end
token: the padding id `END_ID` (0) ends a sequence. `crossjax.models.rnn` builds its
models' `generate` on these.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from crossjax.errors import ConfigError

END_ID = 0  # the padding id doubles as the end of a generated caption
# Length normalisation score / length**alpha. Without it (0) beam search favours short
# hypotheses, since every word lowers the log-probability; 1.0 (mean log-probability per
# word) favours long ones. 0.6 is GNMT's compromise (Wu et al., 2016). On crossjax_shapes
# (configs/shapes_captioner.py, 4 beams) the trained captioner ends captions confidently
# and alpha 0 / 0.6 / 1.0 gave attribute accuracy 0.954 / 0.952 / 0.951 and BLEU-4
# 0.233 / 0.226 / 0.225, so the choice matters little there.
DEFAULT_ALPHA = 0.6

State = Any  # a pytree whose leaves all have the batch as leading axis
StepFn = Callable[[State, jax.Array, jax.Array], tuple[State, jax.Array]]


def normalise(log_prob: jax.Array, length: jax.Array, alpha: float) -> jax.Array:
    """score / length**alpha (length >= 1)."""
    return log_prob / jnp.maximum(length, 1).astype(jnp.float32) ** alpha


def greedy_decode(
    step_fn: StepFn, state: State, *, max_len: int, alpha: float = DEFAULT_ALPHA
) -> tuple[jax.Array, jax.Array]:
    """The most likely word at every position until `END_ID`.

    step_fn(state, prev_ids (N,), t) -> (state, log_probs (N, V)); `state` leaves have the
    batch B as leading axis. Returns ids (B, max_len) int32 (0 from the end on) and the
    normalised score (B,): the sum of the chosen log-probabilities (the end included)
    / length**alpha, where length counts the words and the end.
    """
    batch = jax.tree.leaves(state)[0].shape[0]

    def body(carry, t):
        state, prev, log_prob, length, finished = carry
        state, log_probs = step_fn(state, prev, t)
        token = jnp.where(finished, END_ID, jnp.argmax(log_probs, axis=-1).astype(jnp.int32))
        chosen = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
        log_prob = log_prob + jnp.where(finished, 0.0, chosen)
        length = length + (~finished).astype(jnp.int32)
        return (state, token, log_prob, length, finished | (token == END_ID)), token

    init = (
        state,
        jnp.zeros((batch,), jnp.int32),
        jnp.zeros((batch,), jnp.float32),
        jnp.zeros((batch,), jnp.int32),
        jnp.zeros((batch,), bool),
    )
    (_, _, log_prob, length, _), tokens = jax.lax.scan(body, init, jnp.arange(max_len))
    return tokens.T, normalise(log_prob, length, alpha)


def beam_search(
    step_fn: StepFn,
    state: State,
    *,
    beam_size: int,
    max_len: int,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with `beam_size` beams per example, fixed shapes (a scan over positions).

    At each position every live beam proposes every word, a finished beam (one that chose
    `END_ID`) proposes only itself, unchanged (frozen); the `beam_size` candidates with
    the best normalised score (log-prob / length**alpha) survive. With beam_size 1 this
    is exactly `greedy_decode`. Returns the best beam's ids (B, max_len) int32 and its
    normalised score (B,), as `greedy_decode`.
    """
    leaves = jax.tree.leaves(state)
    batch, k = leaves[0].shape[0], beam_size
    state = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), state)  # (B * K, ...)
    # Only beam 0 is live at first: the K copies would otherwise propose the same words.
    log_prob = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf), (batch, 1))

    def body(carry, t):
        state, prev, log_prob, length, finished, ids = carry
        state, log_probs = step_fn(state, prev.reshape(-1), t)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.reshape(batch, k, vocab)
        stay = jnp.where(jnp.arange(vocab) == END_ID, 0.0, -jnp.inf)  # a frozen beam's move
        scores = log_prob[..., None] + jnp.where(finished[..., None], stay, log_probs)
        lengths = jnp.broadcast_to(jnp.where(finished, length, t + 1)[..., None], scores.shape)
        flat_scores, flat_lengths = scores.reshape(batch, -1), lengths.reshape(batch, -1)
        _, best = jax.lax.top_k(normalise(flat_scores, flat_lengths, alpha), k)  # (B, K)
        parent, token = best // vocab, (best % vocab).astype(jnp.int32)
        pick = lambda x: jnp.take_along_axis(x, parent, axis=1)  # noqa: E731
        ids = jnp.take_along_axis(ids, parent[..., None], axis=1)
        ids = jax.lax.dynamic_update_index_in_dim(ids, token, t, axis=2)
        rows = (jnp.arange(batch)[:, None] * k + parent).reshape(-1)
        state = jax.tree.map(lambda x: x[rows], state)
        carry = (
            state,
            token,
            jnp.take_along_axis(flat_scores, best, axis=1),
            jnp.take_along_axis(flat_lengths, best, axis=1),
            pick(finished) | (token == END_ID),
            ids,
        )
        return carry, None

    init = (
        state,
        jnp.zeros((batch, k), jnp.int32),
        log_prob,
        jnp.zeros((batch, k), jnp.int32),
        jnp.zeros((batch, k), bool),
        jnp.zeros((batch, k, max_len), jnp.int32),
    )
    (_, _, log_prob, length, _, ids), _ = jax.lax.scan(body, init, jnp.arange(max_len))
    normalised = normalise(log_prob, length, alpha)
    best = jnp.argmax(normalised, axis=1)
    rows = jnp.arange(batch)
    return ids[rows, best], normalised[rows, best]


def check_beam_size(beam_size: Any) -> int:
    """`beam_size` as an int >= 1, or a ConfigError."""
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ConfigError(f"beam_size={beam_size!r}; valid: an int >= 1 (1 is greedy)")
    return beam_size


def check_alpha(alpha: Any) -> float:
    """The length-normalisation exponent as a finite float >= 0, or a ConfigError."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha < math.inf:
        raise ConfigError(f"alpha={alpha!r}; valid: a number >= 0 (0: no length normalisation)")
    return float(alpha)
