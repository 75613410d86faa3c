"""Late-fusion classifier over any subset of image, text and audio.

Each modality has its own encoder (B, ...) -> (B, features); a fusion module from
`FUSIONS` combines the embeddings (zeroed for missing modalities) and their presence
bits into one vector, and an MLP head maps it to `logits` (B, K). With one modality
this is the single-modality baseline.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models import (
    MODELS,
    int_tuple,
    parse_dtype,
    positive_int,
    read_fields,
    require_modalities,
)
from crossjax.models.encoders import IMAGE_ENCODERS, AudioEncoder, BagOfWordsTextEncoder
from crossjax.registry import Registry

SUPPORTED_MODALITIES = ("image", "text", "audio")

# A fusion is a linen Module constructed with `dtype=...` and called as
# `fusion(embeddings, present) -> (B, F)`, where both are dicts keyed by modality,
# embeddings (B, D_m) are already zero where absent, and present is (B,) bool.
FUSIONS: Registry[type[nn.Module]] = Registry("fusion")


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenates each modality's embedding and its presence bit: (B, sum(D_m + 1))."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, embeddings: Mapping[str, jax.Array], present: Mapping[str, jax.Array]
    ) -> jax.Array:
        parts = []
        for modality, emb in embeddings.items():
            parts.append(emb.astype(self.dtype))
            parts.append(present[modality].astype(self.dtype)[:, None])
        return jnp.concatenate(parts, axis=-1)


def presence(batch: Mapping[str, jax.Array], modality: str, batch_size: int) -> jax.Array:
    """`present/<modality>` (B,) bool, or all True when the batch has no such key."""
    key = f"present/{modality}"
    if key in batch:
        return batch[key].astype(bool)
    return jnp.ones((batch_size,), dtype=bool)


def _batch_size(batch: Mapping[str, jax.Array], modalities: Sequence[str]) -> int:
    return batch[modalities[0]].shape[0]


class FusionClassifier(nn.Module):
    """Encoders per modality, fusion, MLP head.

    Inputs: the batch contract (`image`, `text` + `text_mask`, `audio`, optional
    `present/<m>`). Outputs: `logits` (B, num_classes) float32 and `emb/<m>` (B, D) per
    modality, zero where `present/<m>` is False. A missing modality's input is zeroed
    before encoding, so its values affect neither outputs nor gradients.
    """

    num_classes: int
    encoders: Mapping[str, nn.Module]
    fusion: nn.Module
    hidden: Sequence[int] = (256,)
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        modalities = list(self.encoders)
        batch_size = _batch_size(batch, modalities)
        outputs: dict[str, jax.Array] = {}
        embeddings: dict[str, jax.Array] = {}
        present: dict[str, jax.Array] = {}
        for modality in modalities:
            keep = presence(batch, modality, batch_size)
            emb = self._encode(modality, batch, keep, train)
            chex.assert_rank(emb, 2)
            emb = jnp.where(keep[:, None], emb, 0)
            embeddings[modality] = emb
            present[modality] = keep
            outputs[f"emb/{modality}"] = emb
        x = self.fusion(embeddings, present)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        chex.assert_shape(logits, (batch_size, self.num_classes))
        # Losses want float32 logits even when computing in bfloat16.
        outputs["logits"] = logits.astype(jnp.float32)
        return outputs

    def _encode(
        self, modality: str, batch: Mapping[str, jax.Array], keep: jax.Array, train: bool
    ) -> jax.Array:
        encoder = self.encoders[modality]
        if modality == "text":
            text = batch["text"]
            mask = batch["text_mask"] if "text_mask" in batch else text != 0
            mask = jnp.logical_and(mask.astype(bool), keep[:, None])
            return encoder(jnp.where(mask, text, 0), mask, train=train)
        x = batch[modality]
        x = jnp.where(keep.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0)
        return encoder(x, train=train)


_DEFAULTS = {
    "modalities": None,  # None: every supported modality the dataset provides
    "image_encoder": "mlp",
    "encoder_kwargs": {},  # per modality, e.g. {"image": {"channels": (16, 32)}}
    "features": 128,
    "hidden": (256,),
    "dropout": 0.0,
    "fusion": "concat",
    "dtype": "float32",
}


def _encoder_class(modality: str, image_encoder: str) -> type[nn.Module]:
    if modality == "image":
        return IMAGE_ENCODERS.get(image_encoder)
    return {"text": BagOfWordsTextEncoder, "audio": AudioEncoder}[modality]


def _build_encoder(
    modality: str, fields: dict[str, Any], spec: DataSpec, dtype: Any, model: str
) -> nn.Module:
    cls = _encoder_class(modality, fields["image_encoder"])
    kwargs = fields["encoder_kwargs"].get(modality) or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(
            f"model {model!r} has encoder_kwargs.{modality}={kwargs!r}; valid: a dict of "
            f"{cls.__name__} fields"
        )
    settable = set(inspect.signature(cls).parameters) - {"features", "dtype", "parent", "name"}
    if modality == "text":
        settable.discard("vocab_size")
    unknown = sorted(set(kwargs) - settable)
    if unknown:
        raise ConfigError(
            f"model {model!r}: {modality} encoder {cls.__name__} has no field {unknown[0]!r} "
            f"in encoder_kwargs; valid: {', '.join(sorted(settable))}"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if modality == "text":
        if spec.vocab_size is None:
            raise ConfigError(f"model {model!r} encodes text but the DataSpec has no vocab_size")
        kwargs["vocab_size"] = spec.vocab_size
    if modality == "audio" and spec.audio_shape is not None:
        frame_length = kwargs.get("frame_length", AudioEncoder.frame_length)
        if spec.audio_shape[-1] < frame_length:
            raise ConfigError(
                f"model {model!r}: audio has {spec.audio_shape[-1]} samples, fewer than "
                f"frame_length={frame_length}; set encoder_kwargs.audio.frame_length smaller"
            )
    return cls(features=fields["features"], dtype=dtype, **kwargs)


def _parse_modalities(value: Any, spec: DataSpec, model: str) -> tuple[str, ...]:
    if value is None:
        value = tuple(m for m in SUPPORTED_MODALITIES if m in spec.modalities)
    modalities = (value,) if isinstance(value, str) else tuple(value)
    if not modalities:
        raise ConfigError(
            f"model {model!r} needs at least one modality; valid: {', '.join(SUPPORTED_MODALITIES)}"
        )
    for modality in modalities:
        if modality not in SUPPORTED_MODALITIES:
            raise ConfigError(
                f"model {model!r} cannot encode modality {modality!r}; "
                f"valid: {', '.join(SUPPORTED_MODALITIES)}"
            )
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"model {model!r} lists a modality twice: {modalities}")
    require_modalities(model, modalities, spec)
    return modalities


def _parse_encoder_kwargs(value: Any, model: str) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"model {model!r} has encoder_kwargs={value!r}; valid: a dict keyed by modality"
        )
    # Settings for supported but unused modalities are ignored, so a single-modality
    # baseline can reuse the fusion config; other keys are typos.
    unknown = sorted(set(value) - set(SUPPORTED_MODALITIES))
    if unknown:
        raise ConfigError(
            f"model {model!r}: encoder_kwargs has key {unknown[0]!r}; "
            f"valid: {', '.join(SUPPORTED_MODALITIES)}"
        )
    return value


@MODELS.register("fusion_classifier")
def fusion_classifier(config: Any, spec: DataSpec) -> FusionClassifier:
    """Builds a `FusionClassifier` from the `model` config section (fields in `_DEFAULTS`)."""
    model = "fusion_classifier"
    fields = read_fields(config, _DEFAULTS, model)
    modalities = _parse_modalities(fields["modalities"], spec, model)
    if spec.num_classes is None:
        raise ConfigError(f"model {model!r} needs a labelled dataset (DataSpec.num_classes)")
    fields["encoder_kwargs"] = _parse_encoder_kwargs(fields["encoder_kwargs"], model)
    fields["features"] = positive_int(fields["features"], "features", model)
    dropout = fields["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"model {model!r} has dropout={dropout!r}; valid: 0 <= dropout < 1")
    dtype = parse_dtype(fields["dtype"], model)
    encoders = {m: _build_encoder(m, fields, spec, dtype, model) for m in modalities}
    return FusionClassifier(
        num_classes=spec.num_classes,
        encoders=encoders,
        fusion=FUSIONS.get(fields["fusion"])(dtype=dtype),
        hidden=int_tuple(fields["hidden"], "hidden", model),
        dropout=float(dropout),
        dtype=dtype,
    )
