"""Loss functions, found by name in `LOSSES` or by `"package.module:function"` path.

A loss is a pure function `loss(outputs, batch, ctx, **kwargs) -> (scalar, metrics)`
returning the BATCH MEAN of a per-example quantity. The trainer may evaluate a loss
per example with `jax.vmap` over batches of one (masked evaluation), so a loss must
work for B = 1 and must not mix examples. Contrastive losses, whose value for one
example depends on the others in the batch, are the exception and say so.

`build_loss` combines several weighted losses from the config, e.g.
`[("cross_entropy", 1.0), ("neg_elbo", 0.5, {"beta": 4.0}), ("my_mod:my_loss", 0.1)]`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from crossjax.errors import ConfigError
from crossjax.registry import Registry

Metrics = dict[str, jax.Array]
LossFn = Callable[..., tuple[jax.Array, Metrics]]


@flax.struct.dataclass
class LossContext:
    """What a loss may need besides outputs and batch; a pytree, so it passes through jit.

    step: int32 scalar array, the training step.
    rng: a JAX PRNG key for stochastic losses (already folded with the step).
    apply_fn: `apply_fn(batch, *, train, rngs) -> outputs` with params bound, for losses
      that need extra forward passes; None where the trainer does not provide one.
    mesh: the device mesh the batch is sharded over (axis "data"), for losses that
      communicate across devices with `jax.shard_map`; None outside the trainer.
    """

    step: jax.Array
    rng: jax.Array
    apply_fn: Callable[..., dict[str, jax.Array]] | None = flax.struct.field(
        pytree_node=False, default=None
    )
    mesh: Any = flax.struct.field(pytree_node=False, default=None)


def batch_level(fn: LossFn) -> LossFn:
    """Marks a loss whose value for one example depends on the others (contrastive).

    The trainer evaluates such losses on whole eval batches (only full ones) instead of
    per example.
    """
    fn.per_example = False
    return fn


def is_per_example(fn: Callable) -> bool:
    """False for losses marked with `batch_level` (also through functools.partial)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "per_example", True)


LOSSES: Registry[LossFn] = Registry("loss")


def require_output(outputs: Mapping[str, jax.Array], key: str, loss: str) -> jax.Array:
    """outputs[key], or a ConfigError saying the model does not produce what the loss needs."""
    if key not in outputs:
        raise ConfigError(
            f"loss {loss!r} needs model output {key!r}; the model gives: "
            f"{', '.join(sorted(outputs)) or 'nothing'}"
        )
    return outputs[key]


_LOSS_ARGS = ("outputs", "batch", "ctx")


def _short_name(name: str) -> str:
    """The metric name of a loss: 'cross_entropy' stays, 'my_mod:cosine' -> 'cosine'."""
    return name.rpartition(":")[2]


def _as_plain_kwargs(kwargs: Any, name: str) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if hasattr(kwargs, "to_dict"):  # ConfigDict and FrozenConfigDict
        return kwargs.to_dict()
    if isinstance(kwargs, Mapping):
        return dict(kwargs)
    raise ConfigError(
        f"loss {name!r}: kwargs must be a dict, got {type(kwargs).__name__}: {kwargs!r}"
    )


def _check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], name: str) -> None:
    """ConfigError when `fn(outputs, batch, ctx, **kwargs)` would not bind."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: let the call itself complain
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    positional = [
        p.name
        for p in params.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    valid = [
        p.name
        for p in params.values()
        if p.name not in positional[: len(_LOSS_ARGS)]
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for key in kwargs:
        if key in positional[: len(_LOSS_ARGS)] or (key not in valid and not accepts_any):
            raise ConfigError(
                f"loss {name!r} has no keyword argument {key!r}; valid: {', '.join(valid) or 'none'}"
            )
    try:
        signature.bind(None, None, None, **kwargs)
    except TypeError as e:
        raise ConfigError(
            f"loss {name!r} cannot be called as {name}(outputs, batch, ctx, **{kwargs!r}): {e}"
        ) from None


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One weighted entry of a combined loss."""

    name: str
    weight: float
    fn: Callable[[Any, Any, LossContext], tuple[jax.Array, Metrics]]


def _parse_entry(entry: Any, index: int) -> LossTerm:
    if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) not in (2, 3):
        raise ConfigError(
            f"loss entry {index} is {entry!r}; expected (name, weight) or (name, weight, kwargs)"
        )
    name, weight = entry[0], entry[1]
    if not isinstance(name, str):
        raise ConfigError(f"loss entry {index}: name must be a string, got {name!r}")
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise ConfigError(f"loss {name!r}: weight must be a number, got {weight!r}")
    kwargs = _as_plain_kwargs(entry[2] if len(entry) == 3 else None, name)
    fn = LOSSES.get(name)
    if not callable(fn):
        raise ConfigError(f"loss {name!r} resolves to {fn!r}, which is not callable")
    _check_kwargs(fn, kwargs, name)
    return LossTerm(name, float(weight), functools.partial(fn, **kwargs) if kwargs else fn)


@dataclasses.dataclass(frozen=True)
class CombinedLoss:
    """sum(weight * term) over `terms`; callable as `(outputs, batch, ctx) -> (total, metrics)`.

    metrics holds every term's own metrics, the term's unweighted value under its short
    name when the term does not report it itself, and `loss` = total. A metric name that
    two terms both report is prefixed with the later term's short name ("<name>/<metric>").
    """

    terms: tuple[LossTerm, ...]

    @property
    def per_example(self) -> bool:
        """True unless a term is `batch_level`: then evaluate on whole batches."""
        return all(is_per_example(term.fn) for term in self.terms)

    def __call__(self, outputs: Any, batch: Any, ctx: LossContext) -> tuple[jax.Array, Metrics]:
        total = jnp.zeros((), jnp.float32)
        metrics: Metrics = {}
        for term in self.terms:
            value, term_metrics = term.fn(outputs, batch, ctx)
            value = jnp.asarray(value, jnp.float32)
            if value.shape != ():
                raise ValueError(
                    f"loss {term.name!r} returned shape {value.shape}; a loss returns the "
                    "batch-mean scalar"
                )
            total = total + term.weight * value
            short = _short_name(term.name)
            term_metrics = dict(term_metrics)
            term_metrics.setdefault(short, value)
            for key, metric in term_metrics.items():
                out_key = key if key not in metrics and key != "loss" else f"{short}/{key}"
                metrics[out_key] = metric
        metrics["loss"] = total
        return total, metrics


def build_loss(spec: Sequence[Any]) -> CombinedLoss:
    """The weighted sum of the losses in `spec`: a list of (name, weight[, kwargs]).

    Names resolve through `LOSSES` (or "package.module:function"); kwargs (dict or
    ConfigDict) are bound by keyword. Raises ConfigError on a malformed entry, unknown
    name, non-numeric weight, unknown kwarg, or a name listed twice.
    """
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
        raise ConfigError(
            f"losses must be a non-empty list of (name, weight[, kwargs]), got {spec!r}"
        )
    terms = tuple(_parse_entry(entry, i) for i, entry in enumerate(spec))
    names = [term.name for term in terms]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"loss {name!r} is listed twice in losses; combine the weights")
    return CombinedLoss(terms)


# Imported last so that the submodules can register themselves in LOSSES above.
from crossjax.losses import classification, generative  # noqa: E402

__all__ = [
    "LOSSES",
    "CombinedLoss",
    "LossContext",
    "LossTerm",
    "build_loss",
    "require_output",
    "classification",
    "generative",
]
# Registers clip, siglip; mvae, mmvae, mopoe; token_cross_entropy.
from crossjax.losses import contrastive, multimodal, sequence  # noqa: E402,F401
