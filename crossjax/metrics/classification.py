"""Classification metrics from a confusion matrix (rows: true class, cols: predicted).

Accumulate `confusion_matrix` on device (jit-able, masks padded examples), sum the
matrices over eval batches, then read `accuracy_from_confusion` and
`macro_f1_from_confusion` on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    logits: jax.Array, labels: jax.Array, num_classes: int, mask: jax.Array | None = None
) -> jax.Array:
    """Counts of (true, predicted) pairs: logits (B, K), labels (B,), mask (B,) -> (K, K) int32.

    The prediction is argmax(logits). Rows where `mask` is False (padding) and labels
    outside [0, num_classes) are not counted. `num_classes` must be static under jit.
    """
    predictions = jnp.argmax(logits, axis=-1)
    true_one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)
    pred_one_hot = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32)
    if mask is not None:
        true_one_hot = true_one_hot * mask.astype(jnp.int32)[:, None]
    return jnp.einsum("bi,bj->ij", true_one_hot, pred_one_hot, preferred_element_type=jnp.int32)


def accuracy_from_confusion(cm: np.ndarray | jax.Array) -> float:
    """Fraction of counted examples on the diagonal of cm (K, K); 0.0 when cm is empty."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def macro_f1_from_confusion(cm: np.ndarray | jax.Array) -> float:
    """Unweighted mean F1 over classes that occur as a label or a prediction.

    Matches sklearn `f1_score(y_true, y_pred, average="macro", zero_division=0)`; a class
    with no true positives has F1 0; 0.0 when cm is empty.
    """
    cm = np.asarray(cm, dtype=np.int64)
    true_positives = np.diag(cm)
    label_counts = cm.sum(axis=1)
    prediction_counts = cm.sum(axis=0)
    occurring = (label_counts + prediction_counts) > 0
    if not occurring.any():
        return 0.0
    denominator = label_counts + prediction_counts  # = 2 TP + FP + FN
    f1 = np.where(denominator > 0, 2 * true_positives / np.maximum(denominator, 1), 0.0)
    return float(np.mean(f1[occurring]))
