"""Fusion classifier over any subset of image, text and audio.

Each modality has its own encoder (B, ...) -> (B, features), any of that modality's
encoders (`image_encoder`, `text_encoder`, `audio_encoder`; built by
`crossjax.models.modality_encoders`); a fusion module from
`FUSIONS` (`config.model.fusion`, options in `config.model.fusion_kwargs`; the zoo is in
`crossjax.models.fusion_methods`) combines the embeddings (zeroed for missing
modalities) and their presence bits into one vector, and an MLP head maps it to
`logits` (B, K). With one modality this is the single-modality baseline.

Early fusion (`early_concat`) keeps this structure: its encoders are parameter-light raw
feature extractors (`RAW_FEATURES`) and the shared encoder lives inside the fusion.
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
from crossjax.models.encoders import check_waveform, log_spectrogram
from crossjax.models.factory import (
    MODELS,
    int_tuple,
    parse_dtype,
    positive_int,
    read_fields,
)
from crossjax.models.fusion_methods import FUSIONS, ConcatFusion  # noqa: F401 - re-exported
from crossjax.models.modality_encoders import (  # noqa: F401 - re-exported
    SUPPORTED_MODALITIES,
    build_encoders,
    encoder_inputs,
    parse_encoder_kwargs,
    parse_modalities,
    presence,
)


def _batch_size(batch: Mapping[str, jax.Array], modalities: Sequence[str]) -> int:
    return batch[modalities[0]].shape[0]


class FusionClassifier(nn.Module):
    """Encoders per modality, fusion, MLP head.

    Inputs: the batch contract (`image`, `text` + `text_mask`, `audio`, optional
    `present/<m>`). Outputs: `logits` (B, num_classes) float32 and `emb/<m>` (B, D_m) per
    modality (the encoder's output, or the raw features for early fusion), zero where
    `present/<m>` is False. A missing modality's input is zeroed before encoding, so its
    values affect neither outputs nor gradients.
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
        return self.encoders[modality](*encoder_inputs(modality, batch, keep), train=train)


# --- raw features for early fusion --------------------------------------------------
# Same call signatures as the encoders, so the classifier treats them alike.


class FlatImageFeatures(nn.Module):
    """The pixels, flattened: image (B, H, W, C) -> (B, H * W * C). No parameters."""

    dtype: Any = jnp.float32

    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(image, 4)
        return image.reshape(image.shape[0], -1).astype(self.dtype)


class BagOfEmbeddingsFeatures(nn.Module):
    """Mean word embedding of the unmasked tokens: text (B, L) -> (B, embed_dim).

    The embedding table is the only way word ids become numbers, so it is learned; there
    is no per-modality layer after it.
    """

    vocab_size: int
    embed_dim: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text: jax.Array, text_mask: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_equal_shape([text, text_mask])
        mask = text_mask.astype(bool)
        embedded = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(
            jnp.where(mask, text, 0)
        )
        count = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1).astype(self.dtype)
        return jnp.sum(jnp.where(mask[..., None], embedded, 0), axis=1) / count


class SpectrogramFeatures(nn.Module):
    """Log spectrogram standardised per frame (no learned scale), then its mean and max
    over frames: audio (B, T) -> (B, 2 * (frame_length // 2 + 1)).

    Pooling over time makes the features independent of when the sound starts.
    """

    frame_length: int = 256
    hop_length: int = 128
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless the audio is a waveform (T,) with T >= frame_length."""
        check_waveform(input_shape, self.frame_length)

    def __call__(self, audio: jax.Array, *, train: bool = False) -> jax.Array:
        spec = log_spectrogram(audio, self.frame_length, self.hop_length)  # (B, frames, bins)
        mean = jnp.mean(spec, axis=-1, keepdims=True)
        spec = (spec - mean) / jnp.sqrt(jnp.var(spec, axis=-1, keepdims=True) + 1e-5)
        return jnp.concatenate([spec.mean(axis=1), spec.max(axis=1)], axis=-1).astype(self.dtype)


RAW_FEATURES: dict[str, type[nn.Module]] = {
    "image": FlatImageFeatures,
    "text": BagOfEmbeddingsFeatures,
    "audio": SpectrogramFeatures,
}


_DEFAULTS = {
    "modalities": None,  # None: every supported modality the dataset provides
    "image_encoder": "mlp",  # any IMAGE_ENCODERS name: mlp | cnn | vit | "module:Class"
    "text_encoder": "bow",  # any TEXT_ENCODERS name: bow | transformer | lstm | gru
    "audio_encoder": "cnn",  # any AUDIO_ENCODERS name
    "encoder_kwargs": {},  # per modality, e.g. {"image": {"channels": (16, 32)}}
    "features": 128,
    "hidden": (256,),
    "dropout": 0.0,
    "fusion": "concat",  # a name in FUSIONS: concat, early_concat, sum, gated, tfn, ...
    "fusion_kwargs": {},  # fields of the fusion module, e.g. {"rank": 8} for lmf
    "dtype": "float32",
}


def _build_fusion(
    fields: dict[str, Any], modalities: tuple[str, ...], dtype: Any, model: str
) -> nn.Module:
    """The fusion module named by `fusion`, with `fusion_kwargs` checked against its fields."""
    name = fields["fusion"]
    if not isinstance(name, str):
        raise ConfigError(
            f"model {model!r} has fusion={name!r}; valid: {', '.join(FUSIONS.names())}"
        )
    cls = FUSIONS.get(name)
    kwargs = fields["fusion_kwargs"] or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(
            f"model {model!r} has fusion_kwargs={kwargs!r}; valid: a dict of {cls.__name__} fields"
        )
    settable = set(inspect.signature(cls).parameters) - {"dtype", "parent", "name"}
    unknown = sorted(set(kwargs) - settable)
    if unknown:
        raise ConfigError(
            f"model {model!r}: fusion {name!r} has no field {unknown[0]!r} in fusion_kwargs; "
            f"valid: {', '.join(sorted(settable)) or 'none'}"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if "features" in settable:  # internal width follows the model's unless set
        kwargs.setdefault("features", fields["features"])
    fusion = cls(dtype=dtype, **kwargs)
    check = getattr(fusion, "check", None)
    if check is not None:
        try:
            check(modalities)
        except ValueError as e:
            raise ConfigError(f"model {model!r}: fusion {name!r} {e}") from None
    return fusion


@MODELS.register("fusion_classifier")
def fusion_classifier(config: Any, spec: DataSpec) -> FusionClassifier:
    """Builds a `FusionClassifier` from the `model` config section (fields in `_DEFAULTS`)."""
    model = "fusion_classifier"
    fields = read_fields(config, _DEFAULTS, model)
    modalities = parse_modalities(fields["modalities"], spec, model)
    if spec.num_classes is None:
        raise ConfigError(f"model {model!r} needs a labelled dataset (DataSpec.num_classes)")
    fields["encoder_kwargs"] = parse_encoder_kwargs(fields["encoder_kwargs"], model)
    fields["features"] = positive_int(fields["features"], "features", model)
    dropout = fields["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"model {model!r} has dropout={dropout!r}; valid: 0 <= dropout < 1")
    dtype = parse_dtype(fields["dtype"], model)
    fusion = _build_fusion(fields, modalities, dtype, model)
    # Early fusion: parameter-light raw features; the fusion holds the shared encoder.
    raw = bool(getattr(type(fusion), "uses_raw_inputs", False))
    encoders = build_encoders(
        {m: RAW_FEATURES[m] if raw else fields[f"{m}_encoder"] for m in modalities},
        fields["encoder_kwargs"],
        spec,
        features=fields["features"],
        dtype=dtype,
        model=model,
    )
    return FusionClassifier(
        num_classes=spec.num_classes,
        encoders=encoders,
        fusion=fusion,
        hidden=int_tuple(fields["hidden"], "hidden", model),
        dropout=float(dropout),
        dtype=dtype,
    )
