"""Trained runs, reopened: restore a workdir's checkpoint, evaluate it, generate with it.

    exp, step, params = restore_run("runs/demo")          # latest checkpoint
    step, metrics = evaluate_checkpoint("runs/demo", "best")
    metrics = evaluate_config(config, "runs/clip_zeroshot")   # pretrained, untrained

The front end of `scripts/evaluate.py` and `scripts/generate.py`. It sits above the
trainer (it builds `crossjax.train.Experiment`s); evaluators never import it: an
evaluator that needs another run (the coherence judge) gets `EvalContext.restore_run`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import ml_collections

from crossjax.checkpoint import restore_experiment, restore_experiment_state
from crossjax.generation import CrossModalGenerator
from crossjax.train import Experiment, _build_experiment


def build_experiment(config: ml_collections.ConfigDict, workdir: str | Path) -> Experiment:
    """The Experiment of `config` with the run's data (vocabulary from `workdir`) and mesh."""
    return _build_experiment(config, Path(workdir))


def restore_run(
    workdir: str | Path, checkpoint: str | int = "latest", *, trust_run_code: bool | None = None
) -> tuple[Experiment, int, Any]:
    """The run in `workdir` rebuilt from its saved config: (experiment, step, params) of
    `checkpoint` ("latest", "best" or a step), on this process's devices.

    A `"module:attr"` name in the saved config is refused unless `trust_run_code` (None:
    `crossjax.registry.set_trust_run_code`, off by default)."""
    return restore_experiment(workdir, build_experiment, checkpoint, trust_run_code=trust_run_code)


def restore_run_state(
    workdir: str | Path, checkpoint: str | int = "latest", *, trust_run_code: bool | None = None
) -> tuple[Experiment, int, Any]:
    """Like `restore_run`, with the whole train state (params, optimizer state and the
    model state, e.g. BatchNorm statistics) in place of the params."""
    return restore_experiment_state(
        workdir, build_experiment, checkpoint, trust_run_code=trust_run_code
    )


def evaluate_checkpoint(
    workdir: str | Path, checkpoint: str | int = "latest", split: str = "test"
) -> tuple[int, dict[str, float]]:
    """Restores `checkpoint` of the run in `workdir` and evaluates it on `split`
    ("test" or "validation").

    The evaluators see `workdir` (files such as robustness.json land there, and a
    coherence judge named by a relative path is found beside it)."""
    exp, step, state = restore_run_state(workdir, checkpoint)
    return step, exp.evaluate(
        state.params,
        split=split,
        step=step,
        workdir=Path(workdir),
        model_state=state.model_state,
    )


def evaluate_config(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    split: str = "test",
    *,
    losses: bool = True,
) -> dict[str, float]:
    """Evaluates `config`'s initial parameters (its pretrained towers, loaded at init) on
    `split` without training: zero-shot and retrieval of a downloaded CLIP. `losses=False`
    runs the evaluators alone (data without the pairs a contrastive loss reads)."""
    from crossjax.config import validate_config

    validate_config(config)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    exp = build_experiment(config, workdir)
    params = exp.init().params
    return exp.evaluate(params, split=split, step=0, workdir=Path(workdir), losses=losses)


def load_generator(workdir: str | Path, checkpoint: str | int = "latest") -> CrossModalGenerator:
    """A `CrossModalGenerator` of `checkpoint` of the generative run in `workdir`."""
    exp, _, params = restore_run(workdir, checkpoint)
    return CrossModalGenerator(exp.model, params, exp.data.spec, exp.data.vocab, exp.data)


def format_metrics(metrics: dict[str, Any]) -> str:
    """One JSON line; non-finite numbers become null, strings stay."""

    def value(v: Any) -> Any:
        if isinstance(v, str):
            return v
        return round(v, 6) if math.isfinite(v) else None

    return json.dumps({k: value(v) for k, v in metrics.items()})
