"""Classification losses on `logits` (B, K) and integer `label` (B,)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from crossjax.errors import ConfigError
from crossjax.losses.base import LOSSES, LossContext, Metrics, masked_by, require_output
from crossjax.requirements import Requires, requires


@LOSSES.register("cross_entropy")
@masked_by("present/label")
@requires(Requires(batch=("label",), outputs=("logits",)))
def cross_entropy(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, Metrics]:
    """Softmax cross-entropy of `logits` (B, K) against `label` (B,): (B,) values.

    With label_smoothing = a, the target is (1 - a) * one_hot + a / K. Metrics:
    `cross_entropy` (the loss) and `accuracy` (argmax == label). Only examples whose `present/label` holds count
    (all when the batch has no such entry).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(
            f"cross_entropy has label_smoothing={label_smoothing}; valid: 0 <= value < 1"
        )
    logits = require_output(outputs, "logits", "cross_entropy").astype(jnp.float32)
    labels = batch["label"]
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets)
    accuracy = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return loss, {"cross_entropy": loss, "accuracy": accuracy}
