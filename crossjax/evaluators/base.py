"""The evaluator contract: the registry, the context evaluators receive, config parsing.

Evaluators import from here, never from the `crossjax.evaluators` package (whose
__init__ imports them to register them). An evaluator is a function `evaluator(ctx: EvalContext, **kwargs) -> dict[str, float]`
registered in `EVALUATORS` (or named as "package.module:function"). The trainer calls
each one named in `config.evaluators` at every evaluation, after the loss metrics, and
merges what it returns into the eval record of metrics.jsonl; prefix metric names with
the evaluator's name (e.g. "retrieval/i2t_r1"). Evaluators may write pictures through
`ctx.writer`. They never change the parameters.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from crossjax.errors import ConfigError
from crossjax.registry import Registry
from crossjax.requirements import Requires, requirements_of
from crossjax.sharding import to_host

EVALUATORS: Registry[Callable[..., dict[str, float]]] = Registry("evaluator")


@dataclasses.dataclass
class EvalContext:
    """What an evaluator may use.

    predict(batch) -> outputs: the model in eval mode (jitted, fixed rng), params bound.
    batches(): one pass over the eval split as (global batch, valid) pairs; `valid` (B,)
      numpy bool marks real rows (the last batch is padded).
    workdir: the run's workdir, or None (e.g. an evaluation that writes nothing).
    """

    config: Any
    spec: Any
    params: Any
    step: int
    workdir: Path | None
    writer: Any
    predict: Callable[[dict], dict]
    batches: Callable[[], Iterator[tuple[dict, np.ndarray]]]
    model: Any = None
    mesh: Any = None
    # The model's non-params collections (BatchNorm statistics; {} for most models):
    # apply the model with `ctx.variables()`, not {"params": ctx.params} alone.
    model_state: Any = dataclasses.field(default_factory=dict)
    vocab: Any = None  # the run's tokenizer (crossjax.data.tokenizers.TextTokenizer), if text
    # restore_run(workdir) -> (experiment, step, train state) of another run's latest
    # checkpoint (the coherence judge; its BatchNorm statistics in state.model_state).
    # The trainer passes it in (see crossjax.checkpoint.restore_experiment_state):
    # evaluators never import the trainer.
    restore_run: Callable[[Path], tuple[Any, int, Any]] | None = None

    def variables(self) -> dict[str, Any]:
        """{"params": params, **model_state}: what `model.apply` takes in eval mode."""
        return {"params": self.params, **(self.model_state or {})}

    def gather(self, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Concatenated numpy outputs and batch entries over the eval split (valid rows only).

        `keys` limits what is kept (output or batch keys); None keeps everything.
        """
        parts: dict[str, list[np.ndarray]] = {}
        for batch, valid in self.batches():
            outputs = self.predict(batch)
            merged = {**batch, **outputs}
            for k, v in merged.items():
                if keys is None or k in keys:
                    v = to_host(v) if isinstance(v, jax.Array) else np.asarray(v)
                    if v.ndim and v.shape[0] == valid.shape[0]:
                        parts.setdefault(k, []).append(v[valid])
        return {k: np.concatenate(v) for k, v in parts.items()}


def evaluator_requirements(
    parsed: list[tuple[str, Callable[..., dict[str, float]], dict]],
) -> list[tuple[str, Requires]]:
    """[("evaluator 'name'", what it reads)] for `parse_evaluators`' output, for
    `crossjax.requirements.check_requirements` before the first step."""
    return [(f"evaluator {name!r}", requirements_of(fn, kwargs)) for name, fn, kwargs in parsed]


def parse_evaluators(spec) -> list[tuple[str, Callable[..., dict[str, float]], dict]]:
    """Config entries `"name"` or `(name, kwargs)` -> [(name, function, kwargs)]."""
    out = []
    for entry in spec or ():
        if isinstance(entry, str):
            name, kwargs = entry, {}
        elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
            name, kwargs = entry[0], dict(entry[1] or {})
        else:
            raise ConfigError(
                f"config.evaluators entry {entry!r} must be 'name' or ('name', {{kwargs}})"
            )
        fn = EVALUATORS.get(name)
        _check_kwargs(name, fn, kwargs)
        out.append((name, fn, kwargs))
    return out


def _check_kwargs(name: str, fn: Callable[..., Any], kwargs: dict) -> None:
    """ConfigError naming a keyword argument that `fn(ctx, **kwargs)` does not take."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())[1:]  # after ctx
    except (TypeError, ValueError):
        return  # no signature to check against: let the call complain
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    valid = [p.name for p in parameters if p.kind in kinds]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(
                f"evaluator {name!r} has no keyword argument {key!r}; "
                f"valid: {', '.join(valid) or 'none'}"
            )
