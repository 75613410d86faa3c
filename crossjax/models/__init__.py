"""Linen models, found by name in `MODELS` and built from the `model` config section.

A factory `factory(config, spec) -> nn.Module` turns the `model` section of an
experiment config (`name` plus model fields) and the dataset's `DataSpec` into an
unbound module whose `__call__(batch, *, train=False)` returns an outputs dict.
Factories reject unknown fields and modalities the dataset lacks with a ConfigError.

The registry and the shared field checks live in `crossjax.models.factory` and the
per-modality encoders are built by `crossjax.models.modality_encoders`; this package
imports every model family (so each registers its factories) and no family imports it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models import (  # every family, so that each registers its factories
    clip_towers,
    contrastive,
    decoders,
    encoders,
    fusion,
    hf_text,
    modality_heads,
    multimodal_vae,
    recurrent,
    resnet,
    rnn,
    semi_supervised_vae,
    siglip_towers,
    transformer,
    vae,
)
from crossjax.models.factory import (
    MODELS,
    int_tuple,
    parse_dtype,
    positive_int,
    read_fields,
    require_modalities,
    to_plain_dict,
)
from crossjax.models.modality_encoders import build_encoder, check_encoder_kwargs


def build_model(config: Any, spec: DataSpec) -> nn.Module:
    """The unbound module named by `config.name`, built by its registered factory."""
    name = to_plain_dict(config).get("name")
    if not isinstance(name, str):
        raise ConfigError(f"model config needs a string 'name'; valid: {', '.join(MODELS.names())}")
    return MODELS.get(name)(config, spec)


__all__ = [
    "MODELS",
    "build_encoder",
    "build_model",
    "check_encoder_kwargs",
    "clip_towers",
    "contrastive",
    "decoders",
    "encoders",
    "fusion",
    "hf_text",
    "modality_heads",
    "int_tuple",
    "multimodal_vae",
    "parse_dtype",
    "positive_int",
    "read_fields",
    "recurrent",
    "require_modalities",
    "resnet",
    "rnn",
    "semi_supervised_vae",
    "siglip_towers",
    "to_plain_dict",
    "transformer",
    "vae",
]
