"""BatchNorm statistics in the trainer: the model state (`batch_stats`) is created at init,
updated by the train step, read in evaluation, frozen on request, checkpointed and
restored N -> M devices with the parameters; models without it are unaffected."""

import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import digits_image
from crossjax import sharding
from crossjax import train as train_lib
from crossjax.checkpoint import Checkpoints
from crossjax.config import load_config_file
from crossjax.data.pipeline import DataPipeline
from crossjax.models.state import split_variables
from crossjax.param_groups import keep_frozen_state

STEPS = 4


def _config(num_devices=0, **encoder):
    """The tiny digits classifier on a tiny ResNet-18 (8x8 images: 2x2 after the stem)."""
    config = digits_image.get_config("tiny")
    config.model.image_encoder = "resnet18"
    config.model.encoder_kwargs = {"image": {"width": 4, "stage_sizes": (1, 1), **encoder}}
    config.model.dropout = 0.0  # deterministic steps: devices and resumes compare exactly
    config.optimizer.name = "sgd"
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.learning_rate = 0.1
    config.num_devices = num_devices
    config.num_train_steps = STEPS
    config.checkpoint_every = 2
    return config


def _stats(state):
    return jax.device_get(state.model_state["batch_stats"])


@pytest.fixture(scope="module")
def data():
    config = _config()
    return DataPipeline(config.data, batch_size=config.batch_size, seed=0, vocab_path=None)


@pytest.fixture(scope="module")
def batch(data):
    return next(data.train_iterator())


@pytest.fixture(scope="module")
def run8(tmp_path_factory):
    """A whole tiny ResNet run on 8 devices: checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("resnet8")
    result = train_lib.train_and_evaluate(_config(), str(workdir))
    return workdir, result


def _restore(workdir, num_devices, step="latest"):
    """(experiment, state) of `workdir`'s checkpoint `step` on `num_devices` devices."""
    config = _config(num_devices)
    data = DataPipeline(config.data, batch_size=config.batch_size, seed=0, vocab_path=None)
    exp = train_lib.Experiment(config, data, train_lib.make_mesh(config))
    with Checkpoints(workdir / "checkpoints", save_every=1) as ckpts:
        return exp, ckpts.restore(exp.abstract_state(), step).state


def test_statistics_change_in_training_and_are_used_in_evaluation(run8, batch):
    workdir, result = run8
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    exp, state = _restore(workdir, 8)
    assert int(state.step) == STEPS
    initial = exp.init()
    assert jax.tree.structure(initial.model_state) == jax.tree.structure(state.model_state)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), _stats(initial), _stats(state))
    assert min(jax.tree.leaves(moved)) > 0  # every BatchNorm's mean and var moved
    # Evaluation reads the statistics: the same params with the initial ones predict otherwise.
    b = sharding.to_global(batch, exp.mesh)
    trained = exp.predict(state.params, b, state.model_state)["logits"]
    untrained = exp.predict(state.params, b, initial.model_state)["logits"]
    assert float(jnp.abs(trained - untrained).max()) > 1e-3
    # ... and an eval pass leaves them as they were
    before = _stats(state)
    exp.evaluate(state.params, split="validation", model_state=state.model_state)
    chex.assert_trees_all_equal(before, _stats(state))


def test_checkpoint_saved_on_8_devices_restores_on_1_with_its_statistics(run8):
    workdir, _ = run8
    _, on8 = _restore(workdir, 8)
    _, on1 = _restore(workdir, 1)
    leaf = jax.tree.leaves(on1.model_state)[0]
    assert len(leaf.sharding.device_set) == 1
    assert len(jax.tree.leaves(on8.model_state)[0].sharding.device_set) == 8
    chex.assert_trees_all_equal(_stats(on8), _stats(on1))
    chex.assert_trees_all_equal(jax.device_get(on8.params), jax.device_get(on1.params))


def test_resume_continues_with_the_saved_statistics(run8, tmp_path):
    """Resuming from step 2 ends where the uninterrupted run ended, statistics included."""
    workdir, _ = run8
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    train_lib.train_and_evaluate(_config(), str(resumed), restore_step=2)
    _, reference = _restore(workdir, 8, STEPS)
    _, state = _restore(resumed, 8, STEPS)
    chex.assert_trees_all_close(_stats(state), _stats(reference), rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(
        jax.device_get(state.params), jax.device_get(reference.params), rtol=1e-6, atol=1e-7
    )


def _train_steps(config, data, batch, steps=1):
    """(experiment, initial state, state after `steps` steps on `batch`) on the host. The
    first step has learning rate 0 (the schedule warms up from 0): only the statistics move."""
    exp = train_lib.Experiment(config, data, train_lib.make_mesh(config))
    state = exp.init()
    initial = jax.device_get(state)
    for _ in range(steps):
        state, _ = exp.train_step(
            state, sharding.to_global(batch, exp.mesh), exp.empty_train_metrics()
        )
    return exp, initial, jax.device_get(state)


def test_statistics_are_over_the_global_batch_on_1_and_8_devices(data, batch):
    _, initial, on1 = _train_steps(_config(1), data, batch)
    _, _, on8 = _train_steps(_config(8), data, batch)
    assert not np.array_equal(
        initial.model_state["batch_stats"]["encoders_image"]["bn1"]["mean"],
        on1.model_state["batch_stats"]["encoders_image"]["bn1"]["mean"],
    )
    # 8 devices x 2 rows normalise as the 16-row batch does (else the variances differ a lot)
    chex.assert_trees_all_close(on8.model_state, on1.model_state, rtol=1e-4, atol=1e-6)


def test_frozen_statistics_from_the_config_stay_bit_identical(data, batch):
    _, initial, state = _train_steps(_config(1, frozen_statistics=True), data, batch, steps=2)
    chex.assert_trees_all_equal(initial.model_state, state.model_state)
    moves = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), initial.params, state.params)
    assert max(jax.tree.leaves(moves)) > 0  # the parameters still train


def test_a_tower_frozen_by_the_optimizer_keeps_its_statistics_and_parameters(data, batch):
    """optimizer.frozen locks the ResNet tower (as LiT locks an image tower): its
    parameters and BatchNorm statistics stay bit-identical while the head trains."""
    config = _config(1)
    config.optimizer.frozen = ("encoders_image",)
    _, initial, state = _train_steps(config, data, batch, steps=2)
    chex.assert_trees_all_equal(initial.model_state, state.model_state)
    chex.assert_trees_all_equal(initial.params["encoders_image"], state.params["encoders_image"])
    assert not np.array_equal(initial.params["head"]["kernel"], state.params["head"]["kernel"])


def test_accumulation_updates_statistics_micro_batch_by_micro_batch(data, batch):
    config = _config(1)
    config.grad_accum_steps = 2
    exp, initial, state = _train_steps(config, data, batch)
    # By hand: the model in training mode on micro-batch 0 (rows 0, 2, 4, ...), then 1.
    variables = {"params": initial.params, **initial.model_state}
    for i in range(2):
        micro = {k: jnp.asarray(v[i::2]) for k, v in batch.items()}
        _, updates = exp.model.apply(
            variables,
            micro,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},
        )
        variables = {**variables, **updates}
    chex.assert_trees_all_close(
        state.model_state["batch_stats"], variables["batch_stats"], rtol=1e-5, atol=1e-6
    )


def test_batch_level_accumulation_updates_statistics_micro_batch_by_micro_batch():
    """The contrastive path (outputs cached per micro-batch) moves them in the same order."""
    from configs import digits_clip

    config = digits_clip.get_config("tiny")
    config.model.image_encoder = "resnet18"
    config.model.encoder_kwargs = {"image": {"width": 4, "stage_sizes": (1,)}}
    config.num_devices, config.grad_accum_steps = 1, 2
    data = DataPipeline(config.data, batch_size=config.batch_size, seed=0, vocab_path=None)
    batch = next(data.train_iterator())
    exp, initial, state = _train_steps(config, data, batch)
    assert not exp.loss_fn.per_example_only
    variables = {"params": initial.params, **initial.model_state}
    for i in range(2):
        micro = {k: jnp.asarray(v[i::2]) for k, v in batch.items()}
        _, updates = exp.model.apply(variables, micro, train=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
    chex.assert_trees_all_close(
        state.model_state["batch_stats"], variables["batch_stats"], rtol=1e-5, atol=1e-6
    )


def test_a_model_without_batchnorm_keeps_its_train_state_and_checkpoint_layout(tmp_path, data):
    config = digits_image.get_config("tiny")  # MLP encoder
    exp = train_lib.Experiment(config, data, train_lib.make_mesh(config))
    state = exp.init()
    assert state.model_state == {}
    assert jax.tree.leaves(state) == jax.tree.leaves((state.step, state.params, state.opt_state))
    with Checkpoints(tmp_path, save_every=1) as ckpts:
        ckpts.save(1, state=state, data_state={}, config={}, force=True)
    # On disk it is the old layout: restorable as {step, params, opt_state} alone.
    old_layout = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), old_layout
    )
    with Checkpoints(tmp_path, save_every=1) as ckpts:
        restored = ckpts.restore(target).state
    chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(old_layout))


def test_split_variables_and_keep_frozen_state():
    params = {"a": jnp.ones(2)}
    stats = {"image": {"m": jnp.zeros(2)}, "text": {"m": jnp.zeros(3)}}
    assert split_variables({"params": params, "batch_stats": stats}) == (
        params,
        {"batch_stats": stats},
    )
    assert split_variables({"params": params}) == (params, {})
    new = jax.tree.map(lambda x: x + 1, {"batch_stats": stats})
    kept = keep_frozen_state({"batch_stats": stats}, new, ["image", "audio"])
    chex.assert_trees_all_equal(kept["batch_stats"]["image"], stats["image"])
    chex.assert_trees_all_equal(kept["batch_stats"]["text"], new["batch_stats"]["text"])
    # A deeper prefix keeps only that subtree.
    stats = {"image": {"m": jnp.zeros(2), "n": jnp.zeros(2)}}
    new = jax.tree.map(lambda x: x + 1, {"batch_stats": stats})
    kept = keep_frozen_state({"batch_stats": stats}, new, ["image/m"])
    chex.assert_trees_all_equal(kept["batch_stats"]["image"]["m"], stats["image"]["m"])
    chex.assert_trees_all_equal(kept["batch_stats"]["image"]["n"], new["batch_stats"]["image"]["n"])
    assert keep_frozen_state({}, {}, ["image"]) == {}


def test_fashion_mnist_resnet18_tiny_trains(tmp_path):
    """The tiny variant of the Fashion-MNIST ResNet-18 recipe (small stem on 28x28)."""
    config = load_config_file("configs/fashion_mnist.py:resnet18_tiny")
    assert config.model.encoder_kwargs["image"]["stem"] == "small"
    config.num_devices, config.num_train_steps, config.batch_size = 1, 2, 8
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        metrics = train_lib.train_and_evaluate(config, str(tmp_path))["test"]
    assert metrics["num_examples"] == 16 and np.isfinite(metrics["loss"])
