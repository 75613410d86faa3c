"""Evaluation metrics: on-device accumulators (jit-able) and host-side summaries."""

from crossjax.metrics.classification import (
    accuracy_from_confusion,
    confusion_matrix,
    macro_f1_from_confusion,
)

__all__ = ["accuracy_from_confusion", "confusion_matrix", "macro_f1_from_confusion"]
