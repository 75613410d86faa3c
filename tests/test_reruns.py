"""Reruns of a run directory as they go wrong in practice: a corrupt final checkpoint,
replayed steps, failed or no-op reruns, resuming from an older checkpoint after the loss
diverged, and a signal that arrives during start-up."""

import glob
import hashlib
import json
import os
import shutil
import signal

import chex
import pytest

from configs import digits_fusion
from crossjax import runs
from crossjax import train as train_lib
from crossjax.errors import CrossjaxError

STEPS = 8


def _config(**overrides):
    config = digits_fusion.get_config("tiny")
    config.num_train_steps = STEPS
    config.log_every = 2
    config.checkpoint_every = 4
    config.eval_every = 4
    for key, value in overrides.items():
        config[key] = value
    return config


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    results = train_lib.train_and_evaluate(_config(), str(workdir))
    return workdir, results


def _copy(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished[0], run)
    return run


def test_corrupt_final_checkpoint_is_replaced_on_rerun(finished, tmp_path):
    run = _copy(finished, tmp_path)
    files = glob.glob(str(run / "checkpoints" / str(STEPS) / "state" / "d" / "*"))
    assert files
    for f in files:
        os.truncate(f, os.path.getsize(f) // 2)
    with pytest.raises(CrossjaxError, match="cannot be restored"):
        runs.restore_run(run, STEPS)
    results = train_lib.train_and_evaluate(_config(), str(run))
    assert results == finished[1]  # retrained from step 4 to the same state
    _, step, params = runs.restore_run(run, STEPS)  # rewritten, restorable
    _, _, original = runs.restore_run(finished[0], STEPS)
    assert step == STEPS
    chex.assert_trees_all_equal(params, original)


def test_no_op_rerun_keeps_config_json_and_records(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = _digest(run / "config.json")
    changed = _config()
    changed.optimizer.learning_rate = 0.5  # describes none of the checkpoints
    results = train_lib.train_and_evaluate(changed, str(run))
    assert results == finished[1]
    assert _digest(run / "config.json") == before
    keys = [(r["step"], r["split"]) for r in _records(run)]
    assert len(keys) == len(set(keys)), keys  # the final evaluation is not recorded twice


def test_failed_rerun_keeps_config_json(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = _digest(run / "config.json")

    def crash(step):
        if step == STEPS + 1:
            raise RuntimeError("crash after the first new step")

    with pytest.raises(RuntimeError, match="crash"):
        train_lib.train_and_evaluate(_config(num_train_steps=12), str(run), on_step=crash)
    assert _digest(run / "config.json") == before


def test_replayed_steps_are_recorded_once(tmp_path):
    def crash(step):
        if step == 7:  # after the record of step 6, past the checkpoint of step 4
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train_lib.train_and_evaluate(_config(), str(tmp_path), on_step=crash)
    train_lib.train_and_evaluate(_config(), str(tmp_path))
    train = [r["step"] for r in _records(tmp_path) if r["split"] == "train"]
    assert train == [2, 4, 6, 8]
    validation = [r["step"] for r in _records(tmp_path) if r["split"] == "validation"]
    assert validation == [4, 8]


def test_divergence_names_the_last_finite_checkpoint_and_restore_step_resumes(
    tmp_path, monkeypatch
):
    module = tmp_path / "diverging_losses.py"
    module.write_text(
        "import jax.numpy as jnp\n"
        "def nan_from_step_six(outputs, batch, ctx):\n"
        "    value = jnp.where(ctx.step >= 5, jnp.nan, 1.0) * jnp.mean(outputs['logits'] ** 2, -1)\n"
        "    return value, {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = str(tmp_path / "run")
    config = _config(checkpoint_every=2, eval_every=0)
    config.losses = (("diverging_losses:nan_from_step_six", 1.0),)
    # The loss of step 6 is computed from the state saved at step 5 (not saved here):
    # step 4 is the newest checkpoint whose parameters gave a finite loss.
    with pytest.raises(
        CrossjaxError, match=r"non-finite at step 6; .* step 4: rerun with --restore_step=4"
    ):
        train_lib.train_and_evaluate(config, run)
    steps = sorted(int(d) for d in os.listdir(os.path.join(run, "checkpoints")) if d.isdigit())
    assert steps == [2, 4]
    # Rerunning from an older step replaces the newer checkpoints.
    results = train_lib.train_and_evaluate(_config(checkpoint_every=2), run, restore_step=2)
    assert results["test"]["num_examples"] > 0
    steps = sorted(int(d) for d in os.listdir(os.path.join(run, "checkpoints")) if d.isdigit())
    assert steps == [4, 6, 8]
    train = [r["step"] for r in _records(run) if r["split"] == "train"]
    assert train == [2, 4, 6, 8]  # the records after step 2 are those of the rerun


@pytest.mark.parametrize("restore_step", ["newest", -1, True])
def test_bad_restore_step_is_refused(restore_step, tmp_path):
    with pytest.raises(CrossjaxError, match="restore_step"):
        train_lib.train_and_evaluate(_config(), str(tmp_path), restore_step=restore_step)


def test_signal_during_start_up_stops_before_the_first_step(tmp_path, monkeypatch):
    open_data = train_lib.open_data

    def open_data_then_signal(config, workdir):
        data = open_data(config, workdir)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the run is starting up
        return data

    monkeypatch.setattr(train_lib, "open_data", open_data_then_signal)
    steps = []
    out = train_lib.train_and_evaluate(_config(), str(tmp_path), on_step=steps.append)
    assert out == {"preempted_at_step": 0.0}
    assert steps == []
    assert not glob.glob(str(tmp_path / "checkpoints" / "[0-9]*"))


def test_a_diverged_state_is_never_saved(tmp_path, monkeypatch):
    module = tmp_path / "diverging_grads.py"
    module.write_text(
        "import jax, jax.numpy as jnp\n"
        "def inf_grad_at_step_six(outputs, batch, ctx):\n"
        "    x = jnp.mean(outputs['logits'] ** 2, -1)\n"
        "    # sqrt at 0: a finite value (0) with an infinite gradient, at step 6 only\n"
        "    bad = lambda v: jnp.sqrt(v - jax.lax.stop_gradient(v))\n"
        "    return 0.01 * x + jax.lax.cond(ctx.step == 5, bad, jnp.zeros_like, x), {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = str(tmp_path / "run")
    config = _config(checkpoint_every=2, eval_every=0)
    config.losses = (("diverging_grads:inf_grad_at_step_six", 1.0),)
    with pytest.raises(
        CrossjaxError,
        match=r"parameters became non-finite at step 6; .* step 4: rerun with --restore_step=4",
    ):
        train_lib.train_and_evaluate(config, run)
    steps = sorted(int(d) for d in os.listdir(os.path.join(run, "checkpoints")) if d.isdigit())
    assert steps == [2, 4]  # not 6, whose parameters are NaN
