"""The model registry and the checks of `model` config fields that every factory shares.

A factory `factory(config, spec) -> nn.Module` registers itself in `MODELS` and turns
the `model` section of an experiment config (`name` plus model fields) and the dataset's
`DataSpec` into an unbound module. Model families import this module, never the
`crossjax.models` package, so the package can import every family (to fill `MODELS`)
without an import cycle. Per-modality encoders are built by
`crossjax.models.modality_encoders`.
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


def require_modalities(model: str, wanted: Iterable[str], spec: DataSpec) -> None:
    """ConfigError when the model asks for a modality that the dataset does not provide."""
    for modality in wanted:
        if modality not in spec.modalities:
            raise ConfigError(
                f"model {model!r} asks for modality {modality!r} but the dataset provides "
                f"only: {', '.join(spec.modalities) or 'none'}"
            )


def boolean(value: Any, field: str, model: str) -> bool:
    """A config field that is a flag, e.g. `attention` or `dreg`."""
    if not isinstance(value, bool):
        raise ConfigError(f"model {model!r} has {field}={value!r}; valid: True, False")
    return value
