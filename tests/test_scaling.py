"""Scaling features of the trainer: FSDP and 2-D meshes, gradient accumulation,
rematerialisation, bf16 compute, N -> M device restore, CPU batch blocking."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import digits_fusion
from crossjax import sharding
from crossjax import train as train_lib
from crossjax.checkpoint import Checkpoints
from crossjax.data.pipeline import DataPipeline


def _config(**overrides):
    config = digits_fusion.get_config("tiny")
    config.model.dropout = 0.0  # deterministic steps, so variants can be compared exactly
    config.model.features = 32
    config.model.hidden = (64,)
    # SGD at a constant rate, unclipped: step 0 has learning rate 0 (the schedules warm
    # up from 0), so _one_step takes two steps; SGD keeps parameter differences
    # proportional to gradient differences (Adam would amplify float noise in near-zero
    # gradients, and clipping would hide a wrong gradient scale).
    config.optimizer.name = "sgd"
    config.optimizer.grad_clip_norm = 0.0
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.learning_rate = 0.1
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def data():
    config = _config()
    return DataPipeline(config.data, batch_size=16, seed=0, vocab_path=None)


def _one_step(config, data, batch_np):
    """Two train steps on one batch (the first has learning rate 0): how far they moved
    the parameters, and the summed metrics. Comparing the moves, not the parameters,
    keeps a 1% error in the gradients from hiding under the parameters' magnitude."""
    exp = train_lib.Experiment(config, data, train_lib.make_mesh(config))
    initial = jax.device_get(exp.init().params)
    state, acc = exp.init(), exp.empty_train_metrics()
    batch = sharding.to_global(batch_np, exp.mesh)
    for _ in range(2):
        state, acc = exp.train_step(state, batch, acc)
    moves = jax.tree.map(np.subtract, jax.device_get(state.params), initial)
    return exp, moves, jax.device_get(acc)


def _assert_same_moves(moves, reference):
    chex.assert_trees_all_close(moves, reference, atol=1e-7, rtol=1e-4)


@pytest.fixture(scope="module")
def reference(data):
    batch = next(data.train_iterator())
    _, moves, acc = _one_step(_config(), data, batch)
    assert min(float(np.abs(m).max()) for m in jax.tree.leaves(moves)) > 1e-5  # real steps
    return batch, moves, acc


def test_gradient_accumulation_equals_the_large_batch(data, reference):
    batch, moves, acc = reference
    exp, accumulated, acc4 = _one_step(_config(grad_accum_steps=4, num_devices=4), data, batch)
    _assert_same_moves(accumulated, moves)
    assert acc4["sum"]["loss"] == pytest.approx(acc["sum"]["loss"], rel=1e-5)
    # on CPU the micro-batch loop is unrolled (convolutions in a loop body are 10x slower)
    state, metrics = exp.init(), exp.empty_train_metrics()
    hlo = exp.train_step.lower(state, sharding.to_global(batch, exp.mesh), metrics).as_text()
    assert "stablehlo.while" not in hlo


def test_blocked_cnn_step_is_the_same_unblocked_and_on_8_devices(data, reference):
    batch = reference[0]

    def config(num_devices, blocks):
        c = _config(num_devices=num_devices)
        c.model.image_encoder = "cnn"
        c.model.encoder_kwargs = {"image": {"channels": (4, 8), "batch_blocks": blocks}}
        return c

    def collectives(exp):
        hlo = (
            exp.train_step.lower(
                exp.init(), sharding.to_global(batch, exp.mesh), exp.empty_train_metrics()
            )
            .compile()
            .as_text()
        )
        ops = ("all-gather", "all-to-all", "collective-permute", "all-reduce")
        return {op: hlo.count(f"{op}(") + hlo.count(f"{op}-start(") for op in ops}

    _, whole, acc = _one_step(config(1, 1), data, batch)
    assert float(np.abs(whole["encoders_image"]["Conv_0"]["kernel"]).max()) > 1e-5
    for num_devices, blocks in ((1, 4), (8, 2)):  # 8 devices: 2 examples each, 1 per block
        exp, moves, acc_n = _one_step(config(num_devices, blocks), data, batch)
        _assert_same_moves(moves, whole)
        assert acc_n["sum"]["loss"] == pytest.approx(acc["sum"]["loss"], rel=1e-5)
    # blocks are cut inside each device's examples: no traffic beyond the unblocked step's
    unblocked, _, _ = _one_step(config(8, 1), data, batch)
    assert collectives(exp) == collectives(unblocked)


def test_fsdp_shards_large_arrays_and_matches_replicated(data, reference):
    batch, moves, _ = reference
    exp, fsdp_moves, _ = _one_step(_config(param_sharding="fsdp", fsdp_min_size=1024), data, batch)
    specs = [s.spec for s in jax.tree.leaves(exp.state_sharding.params)]
    sizes = [x.size for x in jax.tree.leaves(jax.eval_shape(exp._init).params)]
    big = [spec for spec, size in zip(specs, sizes, strict=True) if size >= 1024]
    assert big and all("data" in tuple(spec) for spec in big)  # every large array is split
    small = [spec for spec, size in zip(specs, sizes, strict=True) if size < 1024]
    assert all(tuple(spec) == () or all(a is None for a in spec) for spec in small)
    _assert_same_moves(fsdp_moves, moves)


def test_two_dimensional_mesh_matches_data_parallel(data, reference):
    batch, moves, _ = reference
    exp, mp_moves, _ = _one_step(_config(model_parallel=2), data, batch)
    assert dict(exp.mesh.shape) == {"data": 4, "model": 2}
    assert any("model" in tuple(s.spec) for s in jax.tree.leaves(exp.state_sharding.params))
    _assert_same_moves(mp_moves, moves)


def test_remat_gives_the_same_step(data, reference):
    batch, moves, _ = reference
    _, remat_moves, _ = _one_step(_config(remat=True), data, batch)
    _assert_same_moves(remat_moves, moves)


def test_bf16_compute_keeps_fp32_params_and_optimizer_state(data, reference):
    batch, moves, acc = reference
    config = _config()
    config.model.dtype = "bfloat16"
    exp = train_lib.Experiment(config, data, train_lib.make_mesh(config))
    state, metrics = exp.init(), exp.empty_train_metrics()
    for _ in range(2):  # as _one_step
        state, metrics = exp.train_step(state, sharding.to_global(batch, exp.mesh), metrics)
    leaves = jax.tree.leaves(state.params) + [x for x in jax.tree.leaves(state.opt_state) if x.ndim]
    assert all(x.dtype == jnp.float32 for x in leaves)
    loss = float(metrics["sum"]["loss"])
    assert np.isfinite(loss) and loss == pytest.approx(float(acc["sum"]["loss"]), rel=0.05)


def test_checkpoint_saved_on_8_devices_restores_on_4_and_1(tmp_path):
    config = _config(
        param_sharding="fsdp", fsdp_min_size=1024, num_train_steps=4, checkpoint_every=4
    )
    train_lib.train_and_evaluate(config, str(tmp_path))
    restored = {}
    for n in (8, 4, 1):
        cfg = _config(param_sharding="fsdp", fsdp_min_size=1024, num_devices=n)
        data = DataPipeline(
            cfg.data, batch_size=16, seed=0, vocab_path=os.path.join(tmp_path, "vocab.json")
        )
        exp = train_lib.Experiment(cfg, data, train_lib.make_mesh(cfg))
        with Checkpoints(tmp_path / "checkpoints", save_every=1) as ckpts:
            state = ckpts.restore(exp.abstract_state(), "latest").state
        leaf = jax.tree.leaves(state.params)[0]
        assert len(leaf.sharding.device_set) == n
        restored[n] = jax.device_get(state.params)
    chex.assert_trees_all_equal(restored[8], restored[4])
    chex.assert_trees_all_equal(restored[8], restored[1])


def test_grad_norm_is_computed_at_logged_steps_only(data):
    config = _config(log_every=2, num_train_steps=5)
    exp = train_lib.Experiment(config, data, train_lib.make_mesh(config))
    state, acc = exp.init(), exp.empty_train_metrics()
    it = data.train_iterator()
    # The reference norm, jitted once for the five steps (eager, each step took seconds).
    grad_norm = jax.jit(
        lambda p, b, s: optax.tree.norm(jax.grad(lambda q: exp._loss(q, b, s)[0])(p))
    )
    for step in range(1, 6):
        batch = sharding.to_global(next(it), exp.mesh)
        expected = float(grad_norm(state.params, batch, state.step))
        before = float(acc["grad_norm"])
        state, acc = exp.train_step(state, batch, acc)
        # Logged: every log_every-th step and the last one; otherwise the value stays.
        if step in (2, 4, 5):
            assert float(acc["grad_norm"]) == pytest.approx(expected, rel=1e-5), step
            assert expected > 0
        else:
            assert float(acc["grad_norm"]) == before, step
