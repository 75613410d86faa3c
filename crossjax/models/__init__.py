"""Linen models, found by name in `MODELS` and built from the `model` config section.

A factory `factory(config, spec) -> nn.Module` turns the `model` section of an
experiment config (`name` plus model fields) and the dataset's `DataSpec` into an
unbound module whose `__call__(batch, *, train=False)` returns an outputs dict.
Factories reject unknown fields and modalities the dataset lacks with a ConfigError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.registry import Registry

ModelFactory = Callable[[Any, DataSpec], nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")

_FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def to_plain_dict(value: Any) -> dict[str, Any]:
    """A plain (recursive) dict from a dict, ConfigDict or FrozenConfigDict."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: to_plain_dict(v) if isinstance(v, Mapping) else v for k, v in value.items()}
    raise ConfigError(f"expected a dict or ConfigDict, got {type(value).__name__}: {value!r}")


def read_fields(config: Any, defaults: Mapping[str, Any], model: str) -> dict[str, Any]:
    """`defaults` overridden by the fields of `config` (minus `name`).

    Raises ConfigError naming the first unknown field and listing the valid ones.
    """
    fields = to_plain_dict(config)
    fields.pop("name", None)
    unknown = sorted(set(fields) - set(defaults))
    if unknown:
        raise ConfigError(
            f"model {model!r} has no field {unknown[0]!r}; valid: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **fields}


def parse_dtype(value: Any, model: str) -> jnp.dtype:
    """The computation dtype named by a config value ("float32", "bfloat16", ...)."""
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in _FLOAT_DTYPES:
        raise ConfigError(f"model {model!r} has dtype {value!r}; valid: {', '.join(_FLOAT_DTYPES)}")
    return dtype


def int_tuple(value: Any, field: str, model: str) -> tuple[int, ...]:
    """A config field that lists layer sizes, as a tuple of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ConfigError(f"model {model!r} has {field}={value!r}; valid: a list of positive ints")
    return tuple(value)


def positive_int(value: Any, field: str, model: str) -> int:
    """A config field that is one size, e.g. `features` or `latent_dim`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model {model!r} has {field}={value!r}; valid: an int >= 1")
    return value


# Encoder fields set by the model itself, never through `encoder_kwargs`.
_MODEL_SET_FIELDS = frozenset({"features", "dtype", "parent", "name", "vocab_size"})


def encoder_kwargs(cls: type, kwargs: Any, model: str, where: str = "") -> dict[str, Any]:
    """`encoder_kwargs[.where]` checked against `cls`'s fields (lists become tuples).

    ConfigError when it is not a dict or names a field `cls` lacks (or one the model
    sets itself: features, dtype, vocab_size).
    """
    import inspect  # local: only factories need it

    label = f"encoder_kwargs.{where}" if where else "encoder_kwargs"
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


def text_vocab_size(spec: DataSpec, model: str) -> int:
    """The vocabulary size a text encoder needs; ConfigError when the DataSpec has none."""
    if spec.vocab_size is None:
        raise ConfigError(f"model {model!r} encodes text but the DataSpec has no vocab_size")
    return spec.vocab_size


def require_modalities(model: str, wanted: Iterable[str], spec: DataSpec) -> None:
    """ConfigError when the model asks for a modality that the dataset does not provide."""
    for modality in wanted:
        if modality not in spec.modalities:
            raise ConfigError(
                f"model {model!r} asks for modality {modality!r} but the dataset provides "
                f"only: {', '.join(spec.modalities) or 'none'}"
            )


def build_model(config: Any, spec: DataSpec) -> nn.Module:
    """The unbound module named by `config.name`, built by its registered factory."""
    name = to_plain_dict(config).get("name")
    if not isinstance(name, str):
        raise ConfigError(f"model config needs a string 'name'; valid: {', '.join(MODELS.names())}")
    return MODELS.get(name)(config, spec)


# Imported last so that the submodules can register themselves in MODELS above.
from crossjax.models import encoders, fusion, vae  # noqa: E402

__all__ = [
    "MODELS",
    "build_model",
    "encoder_kwargs",
    "encoders",
    "fusion",
    "int_tuple",
    "parse_dtype",
    "positive_int",
    "read_fields",
    "require_modalities",
    "to_plain_dict",
    "vae",
]
# Registers two_tower, vit; multimodal_vae; captioner, seq_autoencoder, lstm, gru.
from crossjax.models import contrastive, multimodal_vae, rnn, transformer  # noqa: E402,F401
