"""The class label as one more modality of a multimodal VAE.

The label `label` (B,) int32 gets an expert like any modality (one-hot -> Dense ->
ReLU, then the VAE's mean and logvar heads) and a categorical decoder z -> logits (B, K).
Its presence is `present/label`, so a partly labelled set (`data.num_labels`) trains the
same model: an unlabelled example simply lacks the label modality. Classifying is
inferring the label from the other modalities: their posterior, decoded into the label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models.encoders import MLP

LABEL = "label"
LIKELIHOOD = "categorical"


class LabelEncoder(nn.Module):
    """label ids (B,) int -> features (B, features): a Dense layer on the one-hot label."""

    num_classes: int
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, label: jax.Array, *, train: bool = False) -> jax.Array:
        one_hot = jax.nn.one_hot(label, self.num_classes, dtype=self.dtype)
        return nn.relu(nn.Dense(self.features, dtype=self.dtype)(one_hot))


class LabelDecoder(nn.Module):
    """z (N, Z) -> class logits (N, K) float32 through an MLP over `hidden`."""

    num_classes: int
    hidden: Sequence[int] = (256,)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = MLP((*self.hidden, self.num_classes), dtype=self.dtype)(z.astype(self.dtype))
        return x.astype(jnp.float32)


def num_classes_for_label(spec: DataSpec, model: str) -> int:
    """The classes of the label modality; ConfigError for a dataset without labels."""
    if not spec.num_classes:
        raise ConfigError(
            f"model {model!r} lists modality 'label', but the dataset has no class labels; "
            "set data.label_key or drop 'label' from model.modalities"
        )
    return int(spec.num_classes)
