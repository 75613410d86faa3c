"""Confusion-matrix metrics against scikit-learn."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from crossjax.metrics import accuracy_from_confusion, confusion_matrix, macro_f1_from_confusion

K = 6


def random_case(seed: int, batch_size: int = 64, num_used_classes: int = K):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_used_classes, batch_size).astype(np.int32)
    logits = rng.normal(size=(batch_size, K)).astype(np.float32)
    # Make the predictions better than chance so the metrics are not all near zero.
    logits[np.arange(batch_size), labels] += rng.uniform(0, 2, batch_size).astype(np.float32)
    mask = rng.uniform(size=batch_size) < 0.8
    return logits, labels, mask


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_with_masked_rows(seed):
    # Seed 3 and 4 leave some classes unused, which changes macro-F1's class set.
    logits, labels, mask = random_case(seed, num_used_classes=K if seed < 3 else 3)
    # Padded rows carry valid-looking labels and logits; only the mask excludes them.
    cm = jax.jit(confusion_matrix, static_argnums=2)(logits, labels, K, mask)
    chex.assert_shape(cm, (K, K))
    assert cm.dtype == jnp.int32
    y_true, y_pred = labels[mask], logits[mask].argmax(-1)
    np.testing.assert_array_equal(cm, sklearn_confusion_matrix(y_true, y_pred, labels=range(K)))
    np.testing.assert_allclose(accuracy_from_confusion(cm), accuracy_score(y_true, y_pred))
    np.testing.assert_allclose(
        macro_f1_from_confusion(cm), f1_score(y_true, y_pred, average="macro", zero_division=0)
    )


def test_confusion_matrix_without_mask_counts_everything():
    logits, labels, _ = random_case(7)
    cm = confusion_matrix(jnp.asarray(logits), jnp.asarray(labels), K)
    assert int(cm.sum()) == len(labels)
    np.testing.assert_array_equal(
        cm, sklearn_confusion_matrix(labels, logits.argmax(-1), labels=range(K))
    )


def test_out_of_range_labels_are_not_counted():
    logits, labels, _ = random_case(9, batch_size=10)
    labels[:3] = [-1, K, K + 5]
    cm = confusion_matrix(logits, labels, K)
    assert int(cm.sum()) == 7
    np.testing.assert_array_equal(
        cm, sklearn_confusion_matrix(labels[3:], logits[3:].argmax(-1), labels=range(K))
    )


def test_confusion_matrices_add_across_batches():
    logits, labels, mask = random_case(8, batch_size=40)
    halves = [
        confusion_matrix(logits[s], labels[s], K, mask[s]) for s in (slice(0, 20), slice(20, 40))
    ]
    np.testing.assert_array_equal(halves[0] + halves[1], confusion_matrix(logits, labels, K, mask))


def test_macro_f1_with_a_predicted_but_absent_class():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])  # class 2 is predicted but never the label
    cm = sklearn_confusion_matrix(y_true, y_pred, labels=range(4))
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    np.testing.assert_allclose(macro_f1_from_confusion(cm), expected)
    np.testing.assert_allclose(macro_f1_from_confusion(cm), (2 / 3 + 1 + 0) / 3)


def test_empty_confusion_matrix_gives_zero():
    cm = confusion_matrix(jnp.zeros((3, K)), jnp.zeros(3, jnp.int32), K, jnp.zeros(3, bool))
    assert int(cm.sum()) == 0
    assert accuracy_from_confusion(cm) == 0.0
    assert macro_f1_from_confusion(cm) == 0.0
