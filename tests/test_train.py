"""The real train_and_evaluate on tiny configs: learning, checkpoints, exact resume,
1 vs 8 devices, no retracing, and evaluation of a saved run."""

import json
import os
import signal

import chex
import jax
import numpy as np
import pytest

from configs import digits_fusion
from crossjax import runs
from crossjax import train as train_lib
from crossjax.checkpoint import Checkpoints, WorkdirLock
from crossjax.data.pipeline import DataPipeline
from crossjax.errors import CrossjaxError

STEPS = 12


def _config(**overrides):
    config = digits_fusion.get_config("tiny")
    config.num_train_steps = STEPS
    config.log_every = 4
    config.checkpoint_every = 4
    config.optimizer.learning_rate = 5e-3
    for key, value in overrides.items():
        config[key] = value
    return config


def _final_params(workdir, config):
    data = DataPipeline(
        config.data,
        batch_size=config.batch_size,
        seed=config.seed,
        vocab_path=os.path.join(workdir, "vocab.json"),
    )
    exp = train_lib.Experiment(
        config, data, train_lib.sharding.make_mesh(config.num_devices or None)
    )
    with Checkpoints(os.path.join(workdir, "checkpoints"), save_every=1) as ckpts:
        restored = ckpts.restore(exp.abstract_state(), "latest")
    return restored.step, jax.device_get(restored.state.params)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted run on 8 devices whose train and eval steps may each trace once."""
    workdir = str(tmp_path_factory.mktemp("full"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            train_lib.Experiment,
            "_train_step",
            chex.assert_max_traces(train_lib.Experiment._train_step, n=1),
        )
        mp.setattr(
            train_lib.Experiment,
            "_eval_step",
            chex.assert_max_traces(train_lib.Experiment._eval_step, n=1),
        )
        metrics = train_lib.train_and_evaluate(_config(eval_every=4), workdir)
    return workdir, metrics


def test_loss_falls_and_everything_is_written(full_run):
    workdir, metrics = full_run
    train = [r for r in _records(workdir) if r["split"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 12]
    assert train[-1]["loss"] < train[0]["loss"]
    validation = [r for r in _records(workdir) if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [4, 8, 12]
    assert [r["step"] for r in _records(workdir) if r["split"] == "test"] == [12]  # once
    assert set(metrics) == {"validation", "test"}
    assert set(metrics["test"]) >= {"loss", "accuracy", "macro_f1", "cross_entropy"}
    assert metrics["test"]["num_examples"] == 120  # every test example once, none padded in
    assert validation[-1]["num_examples"] == metrics["validation"]["num_examples"]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(STEPS)))
    assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_preempted_run_resumes_to_identical_parameters(full_run, tmp_path):
    workdir = str(tmp_path)
    config = _config(eval_every=4)

    def preempt(step):
        if step == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    out = train_lib.train_and_evaluate(config, workdir, on_step=preempt)
    assert out == {"preempted_at_step": 6.0}
    assert _final_params(workdir, config)[0] == 6  # the preemption checkpoint
    metrics = train_lib.train_and_evaluate(config, workdir)
    step, params = _final_params(workdir, config)
    full_step, full_params = _final_params(full_run[0], config)
    assert step == full_step == STEPS
    chex.assert_trees_all_equal(params, full_params)
    assert metrics == full_run[1]


def test_partly_labelled_run_resumes_to_identical_parameters(tmp_path):
    """data.num_labels + labeled_batch_size: the labelled/unlabelled batch streams restore
    from the checkpointed iterator state mid-run, so a preempted run ends where an
    uninterrupted one does."""
    config = _config(eval_every=0)
    config.data.num_labels = 20
    config.data.labeled_batch_size = 4
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    expected = train_lib.train_and_evaluate(config, whole)

    def preempt(step):
        if step == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    assert train_lib.train_and_evaluate(config, parts, on_step=preempt) == {
        "preempted_at_step": 6.0
    }
    assert train_lib.train_and_evaluate(config, parts) == expected
    chex.assert_trees_all_equal(_final_params(parts, config), _final_params(whole, config))


def test_one_device_matches_eight_devices(full_run, tmp_path):
    config = _config(num_devices=1)
    train_lib.train_and_evaluate(config, str(tmp_path))
    _, one = _final_params(str(tmp_path), config)
    _, eight = _final_params(full_run[0], _config())
    chex.assert_trees_all_close(one, eight, atol=1e-5, rtol=1e-5)


def test_evaluate_checkpoint_reproduces_final_metrics(full_run):
    workdir, metrics = full_run
    step, again = runs.evaluate_checkpoint(workdir, "latest")
    assert step == STEPS
    assert again["accuracy"] == metrics["test"]["accuracy"]
    assert again["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-6)
    _, on_validation = runs.evaluate_checkpoint(workdir, "latest", split="validation")
    assert on_validation["loss"] == pytest.approx(metrics["validation"]["loss"], rel=1e-6)
    # "best" is ranked on the validation split, never on test.
    best_step, _ = runs.evaluate_checkpoint(workdir, "best")
    evals = [r for r in _records(workdir) if r["split"] == "validation"]
    best = max(r["accuracy"] for r in evals)
    assert best_step == max(r["step"] for r in evals if r["accuracy"] == best)  # newest wins ties


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch):
    module = tmp_path / "nan_losses.py"
    module.write_text(
        "import jax.numpy as jnp\n"
        "def nan_after_three(outputs, batch, ctx):\n"
        "    value = jnp.where(ctx.step >= 3, jnp.nan, 1.0) * jnp.mean(outputs['logits'] ** 2, -1)\n"
        "    return value, {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _config()
    config.losses = (("nan_losses:nan_after_three", 1.0),)
    with pytest.raises(CrossjaxError, match="non-finite at step 4"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))


def test_user_loss_from_outside_the_package_trains(tmp_path):
    from configs import digits_align

    config = digits_align.get_config("tiny")
    metrics = train_lib.train_and_evaluate(config, str(tmp_path))["test"]
    train = [r for r in _records(str(tmp_path)) if r["split"] == "train"]
    assert "alignment_cosine" in train[-1] and "alignment_cosine" in metrics
    assert np.isfinite(train[-1]["loss"])


def test_second_run_on_a_held_workdir_is_refused(tmp_path):
    with WorkdirLock(tmp_path):
        with pytest.raises(CrossjaxError, match="in use by a live run"):
            train_lib.train_and_evaluate(_config(), str(tmp_path))


def test_vae_reports_elbo_terms_and_writes_a_reconstruction_grid(tmp_path):
    from configs import digits_vae

    metrics = train_lib.train_and_evaluate(digits_vae.get_config("tiny"), str(tmp_path))["test"]
    assert metrics["neg_elbo"] == pytest.approx(metrics["reconstruction"] + metrics["kl"], rel=1e-5)
    assert metrics["kl"] > 0 and "accuracy" not in metrics
    grid = tmp_path / "images" / "reconstruction_image.png"
    from PIL import Image

    assert Image.open(grid).size == (16 * 9 + 1, 2 * 9 + 1)  # 16 digits over their reconstructions
