"""Accuracy of each modality's own head of a model with one classifier per modality.

`config.evaluators = (("head_accuracy", {"modalities": ("image", "audio")}),)` on a
model that outputs `logits/<m>` (B, K) (crossjax.models.modality_heads): metrics
`head_accuracy/<m>`, the fraction of the eval split's examples whose head m predicts
the label (the model's averaged prediction is the trainer's own `accuracy`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.requirements import Requires, requires


def _needs(kwargs: dict) -> Requires:
    modalities = kwargs.get("modalities", ("image", "audio"))
    return Requires(batch=("label",), outputs=tuple(f"logits/{m}" for m in modalities))


@EVALUATORS.register("head_accuracy")
@requires(_needs)
def head_accuracy(
    ctx: EvalContext, *, modalities: Sequence[str] = ("image", "audio")
) -> dict[str, float]:
    """{"head_accuracy/<m>": accuracy of `logits/<m>` (B, K) against `label` (B,)}."""
    keys = ("label", *(f"logits/{m}" for m in modalities))
    gathered = ctx.gather(keys)
    label = gathered["label"]
    return {
        f"head_accuracy/{m}": float(np.mean(gathered[f"logits/{m}"].argmax(-1) == label))
        for m in modalities
    }
