"""Classification by a multimodal VAE with the label as a modality: accuracy of the label
inferred from each other modality alone (`label_logits/<m>`, see
`crossjax.models.multimodal_vae`). The joint inference from all other modalities is the
trainer's own `accuracy` (the model's `logits`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.requirements import Requires, requires


@EVALUATORS.register("label_inference")
@requires(
    lambda kw: Requires(
        batch=("label",), outputs=tuple(f"label_logits/{m}" for m in kw.get("modalities", ()))
    )
)
def label_inference(ctx: EvalContext, *, modalities: Sequence[str] = ()) -> dict[str, float]:
    """`label_inference/accuracy_<m>`: accuracy of argmax `label_logits/<m>` (B, K) against
    `label` over the eval split, for each of `modalities` (default: every modality the
    model infers the label from)."""
    keys = None if not modalities else ("label", *(f"label_logits/{m}" for m in modalities))
    data = ctx.gather(keys)
    found = sorted(k.removeprefix("label_logits/") for k in data if k.startswith("label_logits/"))
    chosen = list(modalities) or found
    missing = [m for m in chosen if m not in found]
    if missing or not chosen:
        raise ValueError(
            f"label_inference: no label_logits/{missing[0] if missing else '<m>'}; the model "
            "needs 'label' in model.modalities (multimodal_vae)"
        )
    return {
        f"label_inference/accuracy_{m}": float(
            np.mean(np.argmax(data[f"label_logits/{m}"], axis=-1) == data["label"])
        )
        for m in chosen
    }
