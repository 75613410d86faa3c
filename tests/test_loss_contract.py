"""The loss contract: per-example values reduced by the trainer with masks, the same way
in training, gradient accumulation and evaluation; exact accumulation of batch-level
losses; and the test split untouched until training is over."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossjax import sharding
from crossjax import train as train_lib
from crossjax.data.pipeline import DataPipeline
from crossjax.errors import ConfigError
from crossjax.losses import LOSSES, LossContext, batch_level, build_loss, masked_by


@pytest.fixture
def registered(monkeypatch):
    """Registers test losses for one test only."""

    def register(name, fn):
        monkeypatch.setitem(LOSSES._items, name, fn)
        return fn

    return register


def test_masked_reduction_equals_a_loop_over_examples(registered):
    rng = np.random.default_rng(0)
    size = 10
    values_a, values_b = rng.normal(size=size), rng.normal(size=size)
    metric_b = rng.normal(size=size)

    registered("test_a", lambda o, b, c: (o["a"], {"scale": jnp.float32(3.0)}))
    registered("test_b", masked_by("present/label")(lambda o, b, c: (o["b"], {"extra": o["m"]})))
    loss = build_loss([("test_a", 0.5), ("test_b", 2.0)])
    outputs = {"a": jnp.asarray(values_a), "b": jnp.asarray(values_b), "m": jnp.asarray(metric_b)}
    labelled = rng.random(size) < 0.6
    valid = np.arange(size) < 8  # two padded rows
    batch = {"present/label": jnp.asarray(labelled), "x": jnp.zeros((size, 2))}
    ctx = LossContext(step=jnp.zeros((), jnp.int32), rng=jax.random.key(0), mask=jnp.asarray(valid))
    total, metrics = loss(outputs, batch, ctx)

    # The reference: plain Python over the examples each term counts.
    rows_a = [i for i in range(size) if valid[i]]
    rows_b = [i for i in range(size) if valid[i] and labelled[i]]
    mean_a = sum(values_a[i] for i in rows_a) / len(rows_a)
    mean_b = sum(values_b[i] for i in rows_b) / len(rows_b)
    assert float(total) == pytest.approx(0.5 * mean_a + 2.0 * mean_b, rel=1e-5)
    assert float(metrics["test_a"]) == pytest.approx(mean_a, rel=1e-5)
    assert float(metrics["test_b"]) == pytest.approx(mean_b, rel=1e-5)
    assert float(metrics["scale"]) == pytest.approx(3.0)
    extra = sum(metric_b[i] for i in rows_b) / len(rows_b)
    assert float(metrics["extra"]) == pytest.approx(extra, rel=1e-5)


def test_sums_over_parts_finalize_to_the_whole(registered):
    """What evaluation and accumulation rely on: sums of parts finalize to the whole's mean."""
    registered("test_masked", masked_by("present/label")(lambda o, b, c: (o["v"], {})))
    loss = build_loss([("test_masked", 1.0)])
    rng = np.random.default_rng(1)
    v, labelled = rng.normal(size=12), rng.random(12) < 0.5
    ctx = LossContext(step=jnp.zeros((), jnp.int32), rng=jax.random.key(0))

    def sums(rows):
        batch = {"present/label": jnp.asarray(labelled[rows])}
        weights = loss.term_weights(batch, jnp.ones(len(rows), bool))
        per_example = loss.per_example({"v": jnp.asarray(v[rows])}, batch, ctx)
        return loss.term_sums(per_example, weights), {k: jnp.sum(w) for k, w in weights.items()}

    parts = [sums(np.arange(0, 5)), sums(np.arange(5, 12))]
    total = jax.tree.map(jnp.add, *[p[0] for p in parts])
    counts = jax.tree.map(jnp.add, *[p[1] for p in parts])
    whole, _ = loss.finalize(*sums(np.arange(12)))
    chex.assert_trees_all_close(loss.finalize(total, counts)[0], whole, rtol=1e-6)
    assert float(whole) == pytest.approx(v[labelled].mean(), rel=1e-5)


def test_a_loss_written_the_old_way_gets_a_one_line_error(registered):
    registered("test_old", lambda o, b, c: (jnp.mean(o["v"]), {}))
    loss = build_loss([("test_old", 1.0)])
    ctx = LossContext(step=jnp.zeros((), jnp.int32), rng=jax.random.key(0))
    with pytest.raises(ConfigError, match=r"returned values of shape \(\); a loss returns per-ex"):
        loss({"v": jnp.ones(4)}, {"x": jnp.ones((4, 1))}, ctx)
    registered("test_scalar_only", lambda o, b, c: jnp.mean(o["v"]))
    with pytest.raises(ConfigError, match=r"returned \w+; a loss returns \(per-example values"):
        build_loss([("test_scalar_only", 1.0)])({"v": jnp.ones(4)}, {"x": jnp.ones((4, 1))}, ctx)


# -- exact gradient accumulation ------------------------------------------------------------


def _config(kind: str):
    if kind == "clip":
        from configs import shapes_clip

        return shapes_clip.get_config("tiny")
    if kind == "siglip":
        from configs import shapes_clip

        return shapes_clip.get_config("siglip_tiny")
    from configs import digits_mvae  # latent_alignment alone: the unimodal means only

    config = digits_mvae.get_config("tiny")
    config.losses = (("latent_alignment", 1.0, {"temperature": 1.0}),)
    return config


def _experiments(kind, num_devices, tmp_path):
    base = _config(kind)
    base.batch_size = 32
    base.num_devices = num_devices
    data = DataPipeline(
        base.data, batch_size=base.batch_size, seed=base.seed, vocab_path=tmp_path / "vocab.json"
    )
    mesh = sharding.make_mesh(num_devices)
    accumulated = base.copy_and_resolve_references()
    accumulated.grad_accum_steps = 2
    return (
        train_lib.Experiment(base, data, mesh),
        train_lib.Experiment(accumulated, data, mesh),
        data,
        mesh,
    )


@pytest.mark.parametrize("accumulation_case", ["clip", "siglip", "latent_alignment"])
@pytest.mark.parametrize("num_devices", [1, 8])
def test_accumulated_batch_level_gradient_equals_the_full_batch(
    accumulation_case, num_devices, tmp_path, monkeypatch
):
    full, accumulated, data, mesh = _experiments(accumulation_case, num_devices, tmp_path)
    assert not full.loss_fn.per_example_only  # the path under test: cached outputs
    state = full.init()
    batch = next(iter(data.global_train_batches(mesh)))
    step = state.step
    full_grads = jax.jit(full._grads)  # one compilation for the batch and its permutation
    loss, metrics, grads = full_grads(state.params, batch, step)
    loss_k, metrics_k, grads_k = jax.jit(accumulated._grads)(state.params, batch, step)
    # Equal up to float32 summation order: the full batch's own gradient, computed on the
    # same rows permuted, moves by as much (~1e-5 of the gradient's norm).
    permutation = np.random.default_rng(0).permutation(base_batch_size(batch))
    permuted = jax.tree.map(lambda x: x[permutation], batch)
    _, _, grads_p = full_grads(state.params, permuted, step)
    noise = _relative_error(grads_p, grads)
    assert _relative_error(grads_k, grads) <= max(1e-5, 2 * noise)
    chex.assert_trees_all_close(grads_k, grads, atol=1e-4, rtol=1e-4)
    chex.assert_trees_all_close(loss_k, loss, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(metrics_k, metrics, atol=1e-5, rtol=1e-5)

    if num_devices == 8:  # the test can fail: a perturbed cache breaks the equality
        original = train_lib.Experiment._cached_outputs

        def perturbed(self, *args):
            cached = original(self, *args)
            return jax.tree.map(
                lambda x: x + 1e-3 if jnp.issubdtype(x.dtype, jnp.floating) else x, cached
            )

        monkeypatch.setattr(train_lib.Experiment, "_cached_outputs", perturbed)
        _, _, bad = jax.jit(accumulated._grads)(state.params, batch, step)
        assert _relative_error(bad, grads) > max(1e-4, 10 * noise)


def _norm(tree) -> float:
    return float(
        np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)))
    )


def base_batch_size(batch) -> int:
    return jax.tree.leaves(batch)[0].shape[0]


def _relative_error(tree, reference):
    """||tree - reference|| / ||reference|| over every leaf."""
    difference = jax.tree.map(
        lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), tree, reference
    )
    return _norm(difference) / _norm(reference)


def test_accumulated_per_example_gradient_with_partial_masks_equals_the_full_batch(
    tmp_path, registered
):
    """Micro-batches with different numbers of labelled rows still give the full batch's
    masked mean: each divides by the whole batch's count."""
    from configs import digits_fusion

    config = digits_fusion.get_config("tiny")
    config.num_devices = 1
    data = DataPipeline(config.data, batch_size=16, seed=0, vocab_path=tmp_path / "vocab.json")
    mesh = sharding.make_mesh(1)
    config.losses = (("cross_entropy", 1.0),)
    config.model.dropout = 0.0  # the same randomness with and without micro-batches
    full = train_lib.Experiment(config, data, mesh)
    accumulated_config = config.copy_and_resolve_references()
    accumulated_config.grad_accum_steps = 2
    accumulated = train_lib.Experiment(accumulated_config, data, mesh)
    state = full.init()
    batch = dict(next(iter(data.global_train_batches(mesh))))
    labelled = np.zeros(16, bool)
    labelled[[0, 2, 4, 1]] = True  # micro-batch 0 (even rows): 3 labelled, micro 1: 1
    batch["present/label"] = jnp.asarray(labelled)
    # jitted as the trainer runs them (eager, the two passes took seconds each)
    loss, _, grads = jax.jit(full._grads)(state.params, batch, state.step)
    loss_k, _, grads_k = jax.jit(accumulated._grads)(state.params, batch, state.step)
    assert _relative_error(grads_k, grads) < 1e-5
    chex.assert_trees_all_close(loss_k, loss, rtol=1e-6)


def test_batch_level_loss_calling_apply_fn_is_refused_under_accumulation(tmp_path, registered):
    @batch_level
    def uses_apply(outputs, batch, ctx):
        ctx.apply_fn(batch, train=True, rngs={})
        return outputs["logits"][:, 0], {}

    registered("test_uses_apply", uses_apply)
    from configs import digits_fusion

    config = digits_fusion.get_config("tiny")
    config.num_devices = 1
    config.grad_accum_steps = 2
    config.losses = (("test_uses_apply", 1.0),)
    data = DataPipeline(config.data, batch_size=16, seed=0, vocab_path=tmp_path / "v.json")
    exp = train_lib.Experiment(config, data, sharding.make_mesh(1))
    state = exp.init()
    batch = next(iter(data.global_train_batches(exp.mesh)))
    with pytest.raises(ConfigError, match="set grad_accum_steps=1"):
        exp._grads(state.params, batch, state.step)


# -- evaluation covers every example once; the test split waits for the end -----------------


def test_batch_level_evaluation_counts_every_example_once(tmp_path, registered):
    """A batch-level loss sees the padding mask: padded rows are not examples, and the
    last, partial batch counts too."""

    @batch_level
    def rows_seen(outputs, batch, ctx):
        seen = jnp.sum(ctx.mask.astype(jnp.float32))
        value = jnp.zeros(outputs["logits"].shape[:1]) + seen
        return value, {"rows_seen": value}

    registered("test_rows_seen", rows_seen)
    from configs import digits_fusion

    config = digits_fusion.get_config("tiny")
    config.num_train_steps = 2
    config.eval_batch_size = 48
    config.losses = (("cross_entropy", 1.0), ("test_rows_seen", 0.0))
    metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))["test"]
    n = int(metrics["num_examples"])
    sizes = [48] * (n // 48) + ([n % 48] if n % 48 else [])
    assert len(sizes) > 1 and sizes[-1] != 48  # a split that does not divide into batches
    # Each example reports the number of real rows of its batch: the mean over examples
    # weights every batch by its real rows only.
    expected = sum(s * s for s in sizes) / n
    assert metrics["rows_seen"] == pytest.approx(expected, rel=1e-6)


def test_the_test_split_is_read_only_after_training(tmp_path, monkeypatch):
    from configs import digits_fusion

    config = digits_fusion.get_config("tiny")
    config.num_train_steps = 4
    config.eval_every = 2
    reads = []
    steps = [0]
    original = DataPipeline.eval_batches

    @functools.wraps(original)
    def recording(self, *args, split="validation", **kwargs):
        reads.append((split, steps[0]))
        return original(self, *args, split=split, **kwargs)

    monkeypatch.setattr(DataPipeline, "eval_batches", recording)
    train_lib.train_and_evaluate(config, str(tmp_path), on_step=lambda s: steps.__setitem__(0, s))
    assert ("validation", 2) in reads
    test_reads = [step for split, step in reads if split == "test"]
    assert test_reads and all(step == config.num_train_steps for step in test_reads)
    first_test = next(i for i, (split, _) in enumerate(reads) if split == "test")
    assert all(split == "test" for split, _ in reads[first_test:])


def test_an_evaluator_that_does_not_fit_the_data_fails_before_step_one(tmp_path):
    """The captioner's attribute accuracy on data without attributes: one line, before any
    training step, naming the missing keys."""
    import time

    from configs import shapes_captioner

    config = shapes_captioner.get_config("tiny")
    config.data.extra_features = ()  # the data no longer carries the scene attributes
    steps = []
    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=r"evaluator 'captioning' needs batch keys 'attr/num_objects'"
    ) as info:
        train_lib.train_and_evaluate(config, str(tmp_path / "run"), on_step=steps.append)
    assert time.perf_counter() - start < 20
    assert steps == [] and "\n" not in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists() or not any(
        (tmp_path / "run" / "checkpoints").iterdir()
    )


def test_a_loss_the_model_cannot_feed_fails_before_step_one(tmp_path):
    from configs import digits_fusion

    config = digits_fusion.get_config("tiny")
    config.losses = (("cross_entropy", 1.0), ("neg_elbo", 1.0))
    steps = []
    with pytest.raises(
        ConfigError, match=r"loss 'neg_elbo' needs model outputs 'recon/image', 'z_mean'"
    ):
        train_lib.train_and_evaluate(config, str(tmp_path), on_step=steps.append)
    assert steps == []


# -- partly labelled batches ------------------------------------------------------------------


def _supervised_losses() -> list[str]:
    import crossjax.losses  # noqa: F401 - registers the built-in losses

    return [n for n in LOSSES.names() if getattr(LOSSES.get(n), "example_mask", None)]


@pytest.mark.parametrize("name", _supervised_losses())
def test_an_unlabelled_examples_label_value_changes_no_gradient(name):
    """Every loss masked by `present/label`: the hidden label of an unlabelled row (set to
    anything) leaves the loss and its gradient unchanged; a labelled row's label does not."""
    from crossjax.requirements import requirements_of

    size, classes = 6, 5
    needs = requirements_of(LOSSES.get(name))
    rng = np.random.default_rng(0)
    outputs = {k: jnp.asarray(rng.normal(size=(size, classes)), jnp.float32) for k in needs.outputs}
    labelled = jnp.asarray([True, False, True, False, True, True])
    loss = build_loss([(name, 1.0)])
    ctx = LossContext(step=jnp.zeros((), jnp.int32), rng=jax.random.key(0))

    def grads(labels):
        batch = {"label": jnp.asarray(labels, jnp.int32), "present/label": labelled}
        return jax.grad(lambda o: loss(o, batch, ctx)[0])(outputs)

    base = grads([0, 1, 2, 3, 4, 0])
    hidden_changed = grads([0, 4, 2, 0, 4, 0])  # rows 1 and 3 are unlabelled
    chex.assert_trees_all_close(hidden_changed, base, atol=0)
    shown_changed = grads([1, 1, 2, 3, 4, 0])  # row 0 is labelled
    assert any(
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(shown_changed), jax.tree.leaves(base), strict=True)
    )
