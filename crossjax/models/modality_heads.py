"""One classifier per modality, side by side: the model of cross-modal co-training.

Each modality m gets the single-modality fusion classifier (crossjax.models.fusion:
its own encoder, MLP and head, exactly the `configs/av_mnist.py:image` / `:audio`
baselines), so the heads share no parameters and each can teach the other
(crossjax.losses.semi_supervised.cotraining). Their averaged prediction is the model's
`logits`, which the trainer's accuracy reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models.factory import MODELS, read_fields, to_plain_dict
from crossjax.models.fusion import _DEFAULTS, fusion_classifier, presence
from crossjax.models.modality_encoders import parse_modalities


class ModalityHeadsClassifier(nn.Module):
    """A classifier per modality, each seeing only its own modality.

    Outputs: `logits/<m>` (B, K) float32 per modality, `emb/<m>` (B, D_m), and `logits`
    (B, K): log of the mean of the present modalities' softmax (the averaged
    prediction; its argmax is the ensemble's class).
    """

    classifiers: Mapping[str, nn.Module]

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        outputs: dict[str, jax.Array] = {}
        probs, weights = [], []
        for modality, classifier in self.classifiers.items():
            own = classifier(batch, train=train)
            outputs[f"logits/{modality}"] = own["logits"]
            outputs[f"emb/{modality}"] = own[f"emb/{modality}"]
            keep = presence(batch, modality, own["logits"].shape[0]).astype(jnp.float32)
            probs.append(jax.nn.softmax(own["logits"]) * keep[:, None])
            weights.append(keep)
        mean = sum(probs) / jnp.maximum(sum(weights), 1.0)[:, None]
        outputs["logits"] = jnp.log(mean + 1e-8)
        return outputs


@MODELS.register("modality_heads_classifier")
def modality_heads_classifier(config: Any, spec: DataSpec) -> ModalityHeadsClassifier:
    """Builds a `ModalityHeadsClassifier`: the fusion classifier's fields (same defaults),
    used by every modality's own classifier; at least two modalities."""
    model = "modality_heads_classifier"
    fields = read_fields(config, _DEFAULTS, model)
    modalities = parse_modalities(fields["modalities"], spec, model)
    if len(modalities) < 2:
        raise ConfigError(
            f"model {model!r} needs at least two modalities, got {modalities}; use "
            "fusion_classifier for one"
        )
    plain = to_plain_dict(config)
    plain.pop("name", None)
    classifiers = {}
    for modality in modalities:
        own = {**plain, "modalities": (modality,)}
        kwargs = own.get("encoder_kwargs") or {}
        own["encoder_kwargs"] = {m: v for m, v in kwargs.items() if m == modality}
        classifiers[modality] = fusion_classifier(own, spec)
    return ModalityHeadsClassifier(classifiers=classifiers)
