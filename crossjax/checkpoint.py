"""Checkpoints for one run: model state, input-iterator state and config, via Orbax.

This is the only crossjax module that imports Orbax. A step directory holds three items:
`state` (a pytree of possibly sharded arrays), `data` (the input iterator's JSON state)
and `config` (the experiment config as JSON), plus Orbax's `metrics` JSON when a best
metric is tracked. Completeness is Orbax's: a step is written under
`<step>.orbax-checkpoint-tmp` and renamed to `<step>` on commit (`commit_success.txt` on
GCS), and unfinished steps are never listed. Damage after commit (missing or truncated
files) shows up only when restoring, so `restore("latest")` falls back to older steps.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from crossjax.checkpoint_errors import (
    ignore_closed_loop_errors,
    short_reason,
    shorten,
    storage_errors,
)
from crossjax.errors import CrossjaxError
from crossjax.registry import code_references, run_code_trusted

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Restored:
    """What `Checkpoints.restore` returns: the step and the three saved items."""

    step: int
    state: Any
    data_state: dict
    config: dict


class _TolerantCheckpointManager(ocp.CheckpointManager):
    """A CheckpointManager whose start-up survives an unreadable metrics file.

    Orbax reads every step's `metrics` JSON when it starts and only tolerates a missing
    file: a truncated one would make the whole run directory unopenable.
    """

    _warned: set[int] = set()

    def metrics(self, step: int) -> Any:
        try:
            return super().metrics(step)
        except Exception as e:  # noqa: BLE001 - any damage means "no metrics"
            if step not in self._warned:  # steps() re-reads metrics; say it once
                self._warned = self._warned | {step}
                logger.warning("checkpoint step %d: unreadable metrics ignored (%s)", step, e)
            return None


def _metric_value(metrics: Any, name: str) -> float | None:
    """The finite value of `metrics[name]`, or None when absent, non-numeric or NaN/inf."""
    if not isinstance(metrics, Mapping) or name not in metrics:
        return None
    try:
        value = float(metrics[name])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _ranking_fn(name: str, mode: str) -> Callable[[Any], float]:
    """Orbax's best_fn: the metric, or the worst possible score when it is missing."""
    worst = -math.inf if mode == "max" else math.inf
    return lambda metrics: v if (v := _metric_value(metrics, name)) is not None else worst


def _check_json(what: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise CrossjaxError(f"{what} must be JSON-serializable for the checkpoint: {e}") from e


def _saved_form(state: Any) -> Any:
    """What Orbax writes for `state`: a dataclass (the trainer's TrainState) becomes the
    dict of its fields without the empty-dict ones, so a field whose default is {} (the
    model state of a model without BatchNorm) leaves the checkpoint as it was and the
    checkpoints written before that field existed still restore."""
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        return {k: v for k, v in fields.items() if not (isinstance(v, dict) and not v)}
    return state


def _from_saved_form(restored: Any, target: Any) -> Any:
    """The inverse of `_saved_form`: `target`'s dataclass with the restored fields (the
    empty ones keep the target's {})."""
    if dataclasses.is_dataclass(target) and not isinstance(target, type):
        return dataclasses.replace(target, **restored)
    return restored


def _save_without_replica_slices() -> None:
    """On CPU, Orbax writes each replicated array whole instead of cutting it into one
    slice per replica ("replica-parallel" saving, its default off GPU). The slices compile
    one program per array shape and device on the first save, and CPU devices share one
    host memory, so nothing is gained: measured on 2 cores, this is about 2 of the 5 CPU
    seconds of a tiny MNIST CNN run. The checkpoint files are the same either way."""
    import jax

    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if jax.default_backend() != "cpu" or not getattr(handler, "_use_replica_parallel", True):
        return
    ocp.type_handlers.register_type_handler(
        jax.Array,
        ocp.type_handlers.ArrayHandler(
            use_replica_parallel=False,
            array_metadata_store=getattr(handler, "_array_metadata_store", None),
        ),
        override=True,
    )


class Checkpoints:
    """Wraps `ocp.CheckpointManager` for one run directory (WORKDIR/checkpoints).

    Keeps the latest `keep` checkpoints plus the best one by `best_metric` (when given).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
    ):
        if save_every < 1:
            raise CrossjaxError(f"checkpoint save_every must be >= 1, got {save_every}")
        if keep < 1:
            raise CrossjaxError(f"checkpoint keep must be >= 1, got {keep}")
        if best_mode not in ("max", "min"):
            raise CrossjaxError(f"checkpoint best_mode must be 'max' or 'min', got {best_mode!r}")
        directory = os.fspath(directory)
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        self.save_every = save_every
        self.best_metric = best_metric
        self.best_mode = best_mode
        policies: list[ocm.PreservationPolicy] = [ocm.LatestN(n=keep)]
        best_fn = None
        if best_metric is not None:
            best_fn = _ranking_fn(best_metric, best_mode)
            # Saves without the metric rank worst, so they live only as long as LatestN
            # keeps them and never displace the real best.
            policies.append(
                ocm.BestN(
                    get_metric_fn=best_fn,
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocm.AnySavePolicy(
                [ocm.FixedIntervalPolicy(save_every), ocm.PreemptionCheckpointingPolicy()]
            ),
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            # best_fn here only makes Orbax write the metrics item; preservation is above.
            best_fn=best_fn,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            # Never delete tmp dirs on open: an evaluator may open a live run's directory.
            cleanup_tmp_directories=False,
        )
        ignore_closed_loop_errors()
        _save_without_replica_slices()
        self._manager = _TolerantCheckpointManager(self.directory, options=options)
        self._pending_step: int | None = None
        # Steps newer than the one a run resumed from (unrestorable, or passed over by an
        # explicit restore step): deleted at the next save, which replaces them.
        self._superseded: set[int] = set()
        self._closed = False

    def steps(self) -> list[int]:
        """Steps of complete checkpoints, ascending (a save still in flight is left out)."""
        if self._manager.is_saving_in_progress():
            pending = self._pending_step
            return sorted(s for s in self._manager.all_steps() if s != pending)
        self._manager.reload()  # also sees checkpoints written by another process
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        """Whether `step` is a regular save step (or a multi-host preemption sync point)."""
        return step % self.save_every == 0 or self._manager.reached_preemption(step)

    def save(
        self,
        step: int,
        *,
        state: Any,
        data_state: dict,
        config: dict,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Starts an (async) save of `state`, `data_state` and `config` at `step`.

        Returns whether a save started: False when `step` is not a save step and not
        `force`d, or when a checkpoint of `step` already exists (e.g. a forced final save
        right after the regular one). `metrics` rank checkpoints for "best" and are only
        recorded when `best_metric` is set.
        """
        if not force and not self.should_save(step):
            return False
        _check_json("data_state", data_state)
        _check_json("config", config)
        self.wait_until_finished()
        self._drop_superseded()
        existing = sorted(self._manager.all_steps())
        if step in existing:
            logger.info(
                "checkpoint step %d already exists in %s; not saving again", step, self.directory
            )
            return False
        newer = [s for s in existing if s > step]
        if newer:
            raise CrossjaxError(
                f"cannot save step {step}: {self.directory} holds newer checkpoints {newer} "
                "from another run; resume from the latest or choose another --workdir"
            )
        # Orbax writes the metrics item only when it is not None. An empty dict marks a
        # save without eval; it ranks worst (see _ranking_fn) and avoids Orbax's warning.
        metric_values = {k: float(v) for k, v in (metrics or {}).items()}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_saved_form(state)),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config),
        )
        with storage_errors(self.directory):
            started = self._manager.save(step, args=args, metrics=metric_values, force=True)
        if started:
            self._pending_step = step
        return bool(started)

    def supersede_after(self, step: int) -> list[int]:
        """Marks every checkpoint newer than `step` for deletion at the next save (a run
        resuming from an older step on purpose); returns those steps."""
        newer = [s for s in self.steps() if s > step]
        self._superseded.update(newer)
        return newer

    def _drop_superseded(self) -> None:
        """Deletes steps newer than the one the run resumed from (they failed to restore,
        or the run chose an older step).

        They would hold a `keep` slot and block re-saving the same step numbers, and a
        corrupt final checkpoint would otherwise never be replaced.
        """
        for step in sorted(self._superseded):
            if step in self._manager.all_steps():
                logger.warning(
                    "deleting checkpoint step %d in %s: the run resumed from an older step "
                    "and now replaces it",
                    step,
                    self.directory,
                )
                self._manager.delete(step)
        self._superseded.clear()

    def restore(self, abstract_state: Any, step: int | str = "latest") -> Restored:
        """Restores `step` ("latest", "best" or an int) onto `abstract_state`'s shardings.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `.sharding`, so the
        arrays land sharded as requested, also on a different device count. "latest"
        skips damaged checkpoints with a warning and falls back to older ones.
        """
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(_saved_form(abstract_state)),
            data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore(),
        )
        found, result = self._restore(step, args)
        state = _from_saved_form(result.state, abstract_state)
        return Restored(found, state, dict(result.data), dict(result.config))

    def read_config(self, step: int | str = "latest") -> dict:
        """Just the saved config JSON of `step` (to build the model before restoring)."""
        _, result = self._restore(step, ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(result.config)

    def _restore(self, step: int | str, args: ocp.args.Composite) -> tuple[int, Any]:
        self.wait_until_finished()
        steps = self.steps()
        if not steps:
            raise CrossjaxError(
                f"no checkpoint in {self.directory}; train first or check --workdir"
            )
        if step == "latest":
            candidates = steps[::-1]
        elif step == "best":
            candidates = [self._best_step(steps)]
        elif isinstance(step, int) and not isinstance(step, bool):
            if step not in steps:
                raise CrossjaxError(
                    f"no checkpoint for step {step} in {self.directory}; available steps: {steps}"
                )
            candidates = [step]
        else:
            raise CrossjaxError(f"checkpoint step must be an int, 'latest' or 'best'; got {step!r}")
        failed: list[tuple[int, str]] = []
        for candidate in candidates:
            try:
                result = self._manager.restore(candidate, args=args)
            except Exception as e:  # noqa: BLE001 - any damage: fall back or report
                reason = short_reason(e)
                if step != "latest":
                    raise CrossjaxError(
                        f"checkpoint step {candidate} in {self.directory} cannot be restored "
                        f"({reason})"
                    ) from e
                logger.warning(
                    "checkpoint step %d in %s cannot be restored (%s); falling back to the "
                    "previous checkpoint",
                    candidate,
                    self.directory,
                    reason,
                )
                failed.append((candidate, reason))
                continue
            if failed:
                self._superseded.update(s for s, _ in failed)
                logger.warning(
                    "restored checkpoint step %d after skipping unrestorable steps %s",
                    candidate,
                    [s for s, _ in failed],
                )
            return candidate, result
        # One line: each step's reason was logged above as it failed.
        raise CrossjaxError(
            f"no checkpoint in {self.directory} could be restored (steps "
            f"{[s for s, _ in failed]} are damaged; step {failed[0][0]}: "
            f"{shorten(failed[0][1], 160)}); train in a new --workdir"
        )

    def _best_step(self, steps: list[int]) -> int:
        """The kept step with the best `best_metric`; the newest wins a tie (as in BestN)."""
        if self.best_metric is None:
            raise CrossjaxError(
                "restoring the 'best' checkpoint needs best_metric to be set "
                "(the eval metric that ranks checkpoints)"
            )
        sign = 1.0 if self.best_mode == "max" else -1.0
        scored = [
            (sign * value, s)
            for s in steps
            if (value := _metric_value(self._manager.metrics(s), self.best_metric)) is not None
        ]
        if not scored:
            raise CrossjaxError(
                f"no checkpoint in {self.directory} has metric {self.best_metric!r}; "
                f"available steps: {steps}"
            )
        return max(scored)[1]

    def wait_until_finished(self) -> None:
        """Blocks until an in-flight async save is committed (a CrossjaxError when it
        failed for lack of space or permissions)."""
        with storage_errors(self.directory):
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for in-flight saves, then releases Orbax's resources. Idempotent."""
        if not self._closed:
            self._closed = True
            with storage_errors(self.directory):
                self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class WorkdirLock:
    """Refuses a second run on a workdir that a live run holds.

    An exclusive `flock` on WORKDIR/.lock; the OS drops it when the holder dies, so a
    crashed run never blocks the next. In a multi-host job take it on one process only.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = os.fspath(workdir)
        self.path = os.path.join(self.workdir, ".lock")
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CrossjaxError(
                f"workdir {self.workdir} is in use by a live run (pid {holder}); "
                "wait for it or choose another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def restore_experiment(
    workdir: str | os.PathLike,
    build: Callable[[Any, Any], Any],
    checkpoint: int | str = "latest",
    *,
    trust_run_code: bool | None = None,
) -> tuple[Any, int, Any]:
    """(experiment, step, params) of `checkpoint` of the run in `workdir`: the params of
    `restore_experiment_state` (see there), for models without model state."""
    experiment, step, state = restore_experiment_state(
        workdir, build, checkpoint, trust_run_code=trust_run_code
    )
    return experiment, step, state.params


def restore_experiment_state(
    workdir: str | os.PathLike,
    build: Callable[[Any, Any], Any],
    checkpoint: int | str = "latest",
    *,
    trust_run_code: bool | None = None,
) -> tuple[Any, int, Any]:
    """(experiment, step, train state) of `checkpoint` ("latest", "best" or a step) of the
    run in `workdir`: `build(config, workdir_path)` makes the experiment from the run's saved
    config (an ml_collections.ConfigDict) and its `abstract_state()` says where the arrays
    land. The state's `model_state` holds BatchNorm statistics, which evaluation needs.

    The saved config is data: its `"module:attr"` names are refused unless `trust_run_code`
    (None: the process-wide `crossjax.registry.set_trust_run_code`, which the scripts' flag
    sets). Generic so that modules below the trainer can restore runs too (the trainer
    hands evaluators `functools.partial(restore_experiment_state, build=...)`); scripts and
    notebooks use `crossjax.runs.restore_run_state` or `restore_run`.
    """
    path = Path(workdir)
    if not (path / "checkpoints").exists():
        raise CrossjaxError(f"no checkpoints in {workdir}; train there first with scripts/train.py")
    with Checkpoints(path / "checkpoints", save_every=1) as reader:
        latest = reader.read_config("latest")  # how this run ranks its checkpoints
    ckpts = Checkpoints(
        path / "checkpoints",
        save_every=1,
        best_metric=latest.get("best_metric") or None,
        best_mode=latest.get("best_mode", "max"),
    )
    try:
        saved = ckpts.read_config(checkpoint)
        trusted = run_code_trusted() if trust_run_code is None else trust_run_code
        if not trusted and (refs := code_references(saved)):
            raise CrossjaxError(
                f"the run in {workdir} imports code from outside crossjax ({', '.join(refs)}); "
                "pass --trust_run_code if you trust that run and your Python path"
            )
        experiment = build(ml_collections.ConfigDict(saved), path)
        restored = ckpts.restore(experiment.abstract_state(), checkpoint)
        return experiment, restored.step, restored.state
    finally:
        ckpts.close()
