"""Per-modality encoders for every model family, chosen by name and checked in one place.

`build_encoder(modality, spec, encoder=..., kwargs=..., ...)` maps a modality ("image",
"text", "audio"), the dataset's `DataSpec` and the config's encoder choice (a name in
that modality's registry, `ENCODERS[modality]`, or "package.module:Class") and
`encoder_kwargs` to an unbound encoder module; an `encoder_kwargs` entry `pretrained`
(a weights file, or {"path", "layout"}: see `crossjax.models.pretrained`) makes the
encoder's `init` load those weights. Its one argument check raises a one-line
ConfigError for: a modality that is not supported or not in the data, an unknown encoder
name, encoder kwargs that are not a dict or name a field the encoder lacks, text without
a vocabulary, and an encoder whose fields do not fit the data's input shape (the
encoder's own `check(input_shape)`: audio frame length vs the audio length, ViT patches
vs the image size, transformer heads vs width).

`encoder_inputs(modality, batch, keep)` gives the arguments every encoder of a modality
takes, with absent examples and masked tokens zeroed, so that all families feed their
encoders the same way.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models import (  # noqa: F401 - register their encoders
    clip_towers,
    hf_text,
    pretrained,
    recurrent,
    resnet,
    siglip_towers,
    transformer,
)
from crossjax.models.encoders import AUDIO_ENCODERS, IMAGE_ENCODERS, TEXT_ENCODERS
from crossjax.models.factory import require_modalities
from crossjax.registry import Registry, import_from_path

log = logging.getLogger(__name__)

SUPPORTED_MODALITIES = ("image", "text", "audio")
ENCODERS: dict[str, Registry[type[nn.Module]]] = {
    "image": IMAGE_ENCODERS,
    "text": TEXT_ENCODERS,
    "audio": AUDIO_ENCODERS,
}

# Encoder fields set by the model itself, never through `encoder_kwargs`.
_MODEL_SET_FIELDS = frozenset({"features", "dtype", "parent", "name", "vocab_size"})


def check_modality(
    modality: Any,
    spec: DataSpec,
    model: str,
    supported: Sequence[str] = SUPPORTED_MODALITIES,
    verb: str = "encode",
) -> str:
    """`modality` checked: one of `supported` and provided by the dataset."""
    if modality not in supported:
        raise ConfigError(
            f"model {model!r} cannot {verb} modality {modality!r}; valid: {', '.join(supported)}"
        )
    require_modalities(model, (modality,), spec)
    return modality


def parse_modalities(value: Any, spec: DataSpec, model: str) -> tuple[str, ...]:
    """`config.model.modalities` checked: default every supported modality of `spec`;
    each one supported, none twice, all in the dataset."""
    if value is None:
        value = tuple(m for m in SUPPORTED_MODALITIES if m in spec.modalities)
    modalities = (value,) if isinstance(value, str) else tuple(value)
    if not modalities:
        raise ConfigError(
            f"model {model!r} needs at least one modality; valid: {', '.join(SUPPORTED_MODALITIES)}"
        )
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"model {model!r} lists a modality twice: {modalities}")
    return tuple(check_modality(m, spec, model) for m in modalities)


def parse_encoder_kwargs(
    value: Any, model: str, keys: Sequence[str] = SUPPORTED_MODALITIES
) -> dict[str, Any]:
    """`config.model.encoder_kwargs` keyed by modality (or tower): a dict whose keys are
    in `keys`. Settings for keys the model does not use are ignored, so a
    single-modality baseline can reuse a multimodal config; other keys are typos."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"model {model!r} has encoder_kwargs={value!r}; valid: a dict keyed by "
            f"{', '.join(keys)}"
        )
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ConfigError(
            f"model {model!r}: encoder_kwargs has key {unknown[0]!r}; valid: {', '.join(keys)}"
        )
    return dict(value)


def check_encoder_kwargs(cls: type, kwargs: Any, model: str, label: str) -> dict[str, Any]:
    """`kwargs` (the config entry `label`) checked against `cls`'s fields; lists become
    tuples. ConfigError when it is not a dict or names a field `cls` lacks (or one the
    model sets itself: features, dtype, vocab_size)."""
    kwargs = kwargs or {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(
            f"model {model!r} has {label}={kwargs!r}; valid: a dict of {cls.__name__} fields"
        )
    settable = set(inspect.signature(cls).parameters) - _MODEL_SET_FIELDS
    unknown = sorted(set(kwargs) - settable)
    if unknown:
        raise ConfigError(
            f"model {model!r}: encoder {cls.__name__} has no field {unknown[0]!r} in "
            f"{label}; valid: {', '.join(sorted(settable))}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def encoder_class(modality: str, name: Any, model: str, field: str) -> type[nn.Module]:
    """The encoder class named `name` (config field `field`) in `ENCODERS[modality]`,
    or imported from "package.module:Class"."""
    registry = ENCODERS[modality]
    if isinstance(name, str) and ":" in name:
        return import_from_path(name, registry.kind)
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(
            f"model {model!r} has {field}={name!r}: unknown {registry.kind} {name!r}; "
            f"valid: {', '.join(registry.names())} (or 'package.module:Class' for your own)"
        )
    return registry.get(name)


def input_shape(modality: str, spec: DataSpec) -> tuple[int, ...] | None:
    """The per-example input shape of `modality` in `spec` (no batch dim), if known."""
    if modality == "image":
        return None if spec.image_shape is None else tuple(spec.image_shape)
    if modality == "text":
        return None if spec.max_text_len is None else (spec.max_text_len,)
    return None if spec.audio_shape is None else tuple(spec.audio_shape)


def build_encoder(
    modality: str,
    spec: DataSpec,
    *,
    encoder: str | type[nn.Module],
    kwargs: Any,
    features: int | None,
    dtype: Any,
    model: str,
    field: str | None = None,
    kwargs_field: str | None = None,
) -> nn.Module:
    """The encoder of `modality` for data `spec`, checked against both (see module doc).

    encoder: a name in `ENCODERS[modality]` (the config field `field`, default
      "<modality>_encoder"), "package.module:Class", or a module class the model picks.
    kwargs: the encoder's fields from the config entry `kwargs_field` (default
      "encoder_kwargs.<modality>"); `features` (the output width D of (B, D)), `dtype`
      and, for text, `vocab_size` are set here.
    """
    check_modality(modality, spec, model)
    field = field or f"{modality}_encoder"
    kwargs_field = kwargs_field or f"encoder_kwargs.{modality}"
    cls = encoder if isinstance(encoder, type) else encoder_class(modality, encoder, model, field)
    weights = None
    if isinstance(kwargs, Mapping) and "pretrained" in kwargs:
        kwargs = dict(kwargs)
        owner = f"model {model!r} ({kwargs_field})"
        value = kwargs.pop("pretrained")
        if value == "":  # a config's checkpoint left unset
            log.warning("%s: pretrained='' (no weights file): random initial weights", owner)
        else:
            weights = pretrained.parse_pretrained(value, encoder, owner)
    kwargs = check_encoder_kwargs(cls, kwargs, model, kwargs_field)
    fields = inspect.signature(cls).parameters
    if "vocab_size" in fields:
        if spec.vocab_size is None:
            raise ConfigError(f"model {model!r} encodes text but the DataSpec has no vocab_size")
        kwargs["vocab_size"] = spec.vocab_size
    if "features" in fields and features is not None:
        kwargs["features"] = features
    if weights is not None:
        cls = pretrained.loading_at_init(cls, *weights)
    module = cls(dtype=dtype, **kwargs)
    shape = input_shape(modality, spec)
    check = getattr(module, "check", None)
    if shape is not None and callable(check):
        try:
            check(shape)
        except (ValueError, ConfigError) as e:
            raise ConfigError(
                f"model {model!r}: {modality} encoder {cls.__name__} ({kwargs_field}): {e}"
            ) from None
    return module


def build_encoders(
    choices: Mapping[str, str | type[nn.Module]],
    encoder_kwargs: Mapping[str, Any],
    spec: DataSpec,
    *,
    features: int | None,
    dtype: Any,
    model: str,
) -> dict[str, nn.Module]:
    """`build_encoder` for each modality of `choices` (modality -> encoder name or class),
    with the fields `encoder_kwargs[modality]` (see `parse_encoder_kwargs`)."""
    return {
        modality: build_encoder(
            modality,
            spec,
            encoder=encoder,
            kwargs=encoder_kwargs.get(modality),
            features=features,
            dtype=dtype,
            model=model,
        )
        for modality, encoder in choices.items()
    }


def masked_text(
    text: jax.Array, text_mask: jax.Array | None = None, keep: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """(ids, mask), each (B, L): `text_mask` (default: text != 0) and-ed with `keep` (B,)
    per example, and ids 0 wherever the mask is False."""
    mask = (text != 0) if text_mask is None else text_mask.astype(bool)
    if keep is not None:
        mask = jnp.logical_and(mask, keep[:, None])
    return jnp.where(mask, text, 0), mask


def encoder_inputs(
    modality: str, batch: Mapping[str, jax.Array], keep: jax.Array | None = None
) -> tuple[jax.Array, ...]:
    """The positional arguments of an encoder of `modality`: (ids, mask) (B, L) for text
    (see `masked_text`), else (batch[modality],) with the examples where `keep` (B,) is
    False zeroed, so an absent modality's values reach neither outputs nor gradients."""
    if modality == "text":
        return masked_text(batch["text"], batch.get("text_mask"), keep)
    x = batch[modality]
    if keep is not None:
        x = jnp.where(keep.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0)
    return (x,)


def presence(batch: Mapping[str, jax.Array], modality: str, batch_size: int) -> jax.Array:
    """`present/<modality>` (B,) bool, or all True when the batch has no such key."""
    key = f"present/{modality}"
    if key in batch:
        return batch[key].astype(bool)
    return jnp.ones((batch_size,), dtype=bool)
