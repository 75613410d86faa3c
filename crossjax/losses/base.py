"""The loss contract: per-example values, declared needs, and the weighted sum of terms.

A loss is a pure function `loss(outputs, batch, ctx, **kwargs) -> (values, metrics)`:
`values` (B,) is each example's loss, `metrics` maps names to per-example values (B,)
(a () metric, such as a temperature, is the same for every example). The trainer reduces
them: the mean over the valid rows of the batch (`ctx.mask`), and over the rows where the
loss's own example mask holds (`@masked_by("present/label")`), identically in training,
gradient accumulation and evaluation. A loss therefore never averages over the batch
itself, and padded evaluation rows cost nothing.

Batch-level losses (`@batch_level`, contrastive), whose value for one example depends on
the others in the batch, still return one value per example; they must leave the rows
where `ctx.mask` is False out of positives and negatives. Under gradient accumulation
the trainer computes them on the whole batch's outputs (the other micro-batches' outputs
cached without gradients), which is exact for any loss that reads only `outputs`,
`batch` and `ctx.rng`/`ctx.step`; one that calls `ctx.apply_fn` is refused there.

`@requires(Requires(batch=..., outputs=...))` (crossjax.requirements) declares what a loss
reads, so the trainer finds a mismatch with the data or the model before the first step.

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
from crossjax.requirements import Requires, requirements_of

Metrics = dict[str, jax.Array]
LossFn = Callable[..., tuple[jax.Array, Metrics]]
# The trainer's per-term reductions: {term name: {"value" | metric name: sum over rows}}.
TermSums = dict[str, dict[str, jax.Array]]


@flax.struct.dataclass
class LossContext:
    """What a loss may need besides outputs and batch; a pytree, so it passes through jit.

    step: int32 scalar array, the training step.
    rng: a JAX PRNG key for stochastic losses (already folded with the step).
    mask: (B,) bool, the rows of the batch that are real examples (False: padding of the
      last evaluation batch); the trainer always sets it, None (all rows) only when a
      loss is called by hand. Batch-level losses must keep masked
      rows out of positives and negatives; per-example losses may ignore it.
    apply_fn: `apply_fn(batch, *, train, rngs) -> outputs` with params bound, for losses
      that need extra forward passes; None where the trainer does not provide one.
    mesh: the device mesh the batch is sharded over (axis "data"), for losses that
      communicate across devices with `jax.shard_map`; None outside the trainer.
    """

    step: jax.Array
    rng: jax.Array
    mask: jax.Array | None = None
    apply_fn: Callable[..., dict[str, jax.Array]] | None = flax.struct.field(
        pytree_node=False, default=None
    )
    mesh: Any = flax.struct.field(pytree_node=False, default=None)


def batch_level(fn: LossFn) -> LossFn:
    """Marks a loss whose value for one example depends on the others (contrastive)."""
    fn.per_example = False
    return fn


def masked_by(key: str) -> Callable[[LossFn], LossFn]:
    """Marks a loss that applies only where the batch entry `key` (B,) bool holds, e.g.
    "present/label" for a supervised loss on partly labelled data; absent key: all rows."""

    def mark(fn: LossFn) -> LossFn:
        fn.example_mask = key
        return fn

    return mark


def _unwrap(fn: Callable) -> Callable:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def is_per_example(fn: Callable) -> bool:
    """False for losses marked with `batch_level` (also through functools.partial)."""
    return getattr(_unwrap(fn), "per_example", True)


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

    @property
    def example_mask(self) -> str | None:
        return getattr(_unwrap(self.fn), "example_mask", None)


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


def _per_example(name: str, what: str, value: Any, size: int, *, allow_scalar: bool) -> jax.Array:
    value = jnp.asarray(value, jnp.float32)
    if value.shape == (size,):
        return value
    if allow_scalar and value.shape == ():
        return jnp.broadcast_to(value, (size,))
    raise ConfigError(
        f"loss {name!r} returned {what} of shape {value.shape}; a loss returns per-example "
        f"values of shape ({size},) (the trainer takes the masked mean): return them before "
        "any mean over the batch"
    )


@dataclasses.dataclass(frozen=True)
class CombinedLoss:
    """sum(weight * masked mean of term) over `terms`.

    `per_example` runs every term: {term: (values (B,), metrics {name: (B,)})}.
    `term_weights` gives each term's row weights (valid rows where its example mask holds),
    `term_sums` the weighted sums of values and metrics and `finalize` turns sums and
    counts into the total and the metrics: every term's own metrics, its unweighted value
    under its short name when it does not report it itself, and `loss` = total. A metric
    name that two terms both report is prefixed with the later term's short name
    ("<name>/<metric>"). Sums over micro-batches or evaluation batches finalize to the
    exact mean over all their rows.
    """

    terms: tuple[LossTerm, ...]

    @property
    def per_example_only(self) -> bool:
        """True unless a term is `batch_level`."""
        return all(is_per_example(term.fn) for term in self.terms)

    def requirements(self) -> list[tuple[str, Requires]]:
        return [(f"loss {term.name!r}", requirements_of(term.fn)) for term in self.terms]

    def per_example(
        self, outputs: Any, batch: Any, ctx: LossContext
    ) -> dict[str, tuple[jax.Array, Metrics]]:
        size = _batch_size(batch, ctx)
        out = {}
        for term in self.terms:
            result = term.fn(outputs, batch, ctx)
            if not (isinstance(result, tuple) and len(result) == 2):
                raise ConfigError(
                    f"loss {term.name!r} returned {type(result).__name__}; a loss returns "
                    "(per-example values (B,), {metric name: (B,) values})"
                )
            values, metrics = result
            if size is None:  # called by hand with neither mask nor batch arrays
                size = jnp.shape(values)[0] if jnp.ndim(values) == 1 else 0
            values = _per_example(term.name, "values", values, size, allow_scalar=False)
            metrics = {
                k: _per_example(term.name, f"metric {k!r}", v, size, allow_scalar=True)
                for k, v in dict(metrics).items()
            }
            out[term.name] = (values, metrics)
        return out

    def term_weights(self, batch: Mapping[str, jax.Array], mask: jax.Array) -> dict[str, jax.Array]:
        """{term: (B,) float32}: `mask` and, where the term has one, its example mask."""
        weights = {}
        for term in self.terms:
            w = mask.astype(jnp.float32)
            key = term.example_mask
            if key is not None and key in batch:
                w = w * batch[key].astype(jnp.float32)
            weights[term.name] = w
        return weights

    @staticmethod
    def term_sums(
        per_example: dict[str, tuple[jax.Array, Metrics]], weights: dict[str, jax.Array]
    ) -> TermSums:
        sums = {}
        for name, (values, metrics) in per_example.items():
            w = weights[name]
            term = {"value": jnp.sum(w * values)}
            for key, metric in metrics.items():
                term[f"metric/{key}"] = jnp.sum(w * metric)
            sums[name] = term
        return sums

    def finalize(self, sums: TermSums, counts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(total, metrics) from sums and row counts per term (jnp or numpy alike)."""
        total = 0.0
        metrics: dict[str, Any] = {}
        for term in self.terms:
            count = jnp.maximum(counts[term.name], 1.0)
            term_sums = sums[term.name]
            value = term_sums["value"] / count
            total = total + term.weight * value
            short = _short_name(term.name)
            own = {
                key.removeprefix("metric/"): s / count
                for key, s in term_sums.items()
                if key.startswith("metric/")
            }
            own.setdefault(short, value)
            for key, metric in own.items():
                out_key = key if key not in metrics and key != "loss" else f"{short}/{key}"
                metrics[out_key] = metric
        metrics["loss"] = total
        return total, metrics

    def __call__(self, outputs: Any, batch: Any, ctx: LossContext) -> tuple[jax.Array, Metrics]:
        """The masked mean over this batch: (total scalar, metrics of scalars)."""
        per_example = self.per_example(outputs, batch, ctx)
        size = next(iter(per_example.values()))[0].shape[0]
        mask = ctx.mask if ctx.mask is not None else jnp.ones((size,), bool)
        weights = self.term_weights(batch, mask)
        counts = {name: jnp.sum(w) for name, w in weights.items()}
        return self.finalize(self.term_sums(per_example, weights), counts)


def _batch_size(batch: Mapping[str, jax.Array], ctx: LossContext) -> int | None:
    """B from the mask or the batch; None when neither has a batch axis."""
    if ctx.mask is not None:
        return ctx.mask.shape[0]
    for value in jax.tree.leaves(batch):
        if getattr(value, "ndim", 0):
            return value.shape[0]
    return None


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
