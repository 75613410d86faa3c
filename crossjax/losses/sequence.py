"""Next-token cross-entropy for text decoders (captioners, sequence autoencoders).

The model's `token_logits` (B, L, V) predict `batch["text"]` (B, L) position by position
(the decoder shifts its inputs, see `crossjax.models.rnn`). The targets are the real
words (`text_mask`) and the END: the first padding position, whose target is the padding
id 0, so the model learns where a caption stops. A text of length L has no END target.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from crossjax.losses.base import LOSSES, LossContext, Metrics, require_output
from crossjax.requirements import Requires, requires


def target_weights(text: jax.Array, text_mask: jax.Array) -> jax.Array:
    """(B, L) float32: 1 at the real words and at the first padding position (the END)."""
    mask = text_mask.astype(bool)
    length = jnp.sum(mask, axis=1, keepdims=True)
    end = jnp.arange(text.shape[1])[None, :] == length
    return (mask | end).astype(jnp.float32)


@LOSSES.register("token_cross_entropy")
@requires(Requires(batch=("text",), outputs=("token_logits",)))
def token_cross_entropy(
    outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], ctx: LossContext
) -> tuple[jax.Array, Metrics]:
    """Each example's mean next-token NLL over its targets (words + END): (B,).

    Metrics: `token_nll` (nats per target token of the example) and `token_accuracy`
    (argmax = target, averaged the same way).
    """
    logits = require_output(outputs, "token_logits", "token_cross_entropy").astype(jnp.float32)
    text = batch["text"]
    mask = batch["text_mask"] if "text_mask" in batch else text != 0
    targets = jnp.where(mask.astype(bool), text, 0)
    weights = target_weights(targets, mask)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (B, L)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    token_nll = jnp.sum(nll * weights, axis=1) / count
    accuracy = jnp.sum(correct * weights, axis=1) / count
    return token_nll, {"token_nll": token_nll, "token_accuracy": accuracy}
