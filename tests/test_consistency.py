"""The pseudo-label losses (fixmatch, cotraining), the per-modality heads model and its
evaluator: label masks checked by gradient, values against formulas written out here,
and the configs training a step on idx / audio-visual fixtures."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import jit_apply

from crossjax import train as train_lib
from crossjax.config import load_config_file
from crossjax.data.spec import DataSpec, dummy_batch
from crossjax.errors import ConfigError
from crossjax.losses import LossContext, build_loss
from crossjax.losses.consistency import labelled_row_weights
from crossjax.models.modality_heads import modality_heads_classifier
from crossjax.reproduce import read_records
from tests.test_real_data import write_idx

B, K = 8, 4
IDENTITY = {"image": {}, "audio": {}}  # views equal to the input: values checkable by hand
LABELLED = jnp.array([True, True, True, False, False, False, False, False])


def linear_apply(params):
    """A model with an image head and an audio head, and their averaged `logits`."""

    def apply_fn(batch, *, train, rngs):
        del train, rngs
        image = batch["image"].reshape(batch["image"].shape[0], -1) @ params["image"]
        audio = batch["audio"] @ params["audio"]
        return {"logits/image": image, "logits/audio": audio, "logits": (image + audio) / 2}

    return apply_fn


def make_problem(seed=0):
    keys = jax.random.split(jax.random.key(seed), 5)
    params = {
        "image": 2.0 * jax.random.normal(keys[0], (9, K)),
        "audio": 2.0 * jax.random.normal(keys[1], (6, K)),
    }
    batch = {
        "image": jax.random.uniform(keys[2], (B, 3, 3, 1)),
        "audio": jax.random.normal(keys[3], (B, 6)),
        "label": jnp.where(LABELLED, jax.random.randint(keys[4], (B,), 0, K), 0),
        "present/label": LABELLED,
    }
    return params, batch


def total_loss(spec, params, batch):
    loss = build_loss(spec)
    apply_fn = linear_apply(params)
    outputs = apply_fn(batch, train=True, rngs={})
    ctx = LossContext(jnp.zeros((), jnp.int32), jax.random.key(3), jnp.ones((B,), bool), apply_fn)
    return loss(outputs, batch, ctx)


SPECS = {
    "fixmatch": [("fixmatch", 1.0, {"threshold": 0.5})],
    "cotraining": [("cotraining", 1.0, {"threshold": 0.5})],
}


@pytest.mark.parametrize("name", list(SPECS))
def test_an_unlabelled_rows_label_changes_no_gradient(name):
    params, batch = make_problem()
    grad = jax.jit(jax.grad(lambda p, b: total_loss(SPECS[name], p, b)[0]))  # compiled once
    base = grad(params, batch)
    relabelled = {**batch, "label": batch["label"].at[3:].set(jnp.arange(5) % K + 7)}
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(grad(params, relabelled)), strict=True):
        np.testing.assert_array_equal(a, b)
    # A labelled row's label does reach the gradient (the check above can fail).
    changed = {**batch, "label": batch["label"].at[0].set((batch["label"][0] + 1) % K)}
    assert not np.allclose(jax.tree.leaves(base)[0], jax.tree.leaves(grad(params, changed))[0])


def test_fixmatch_is_labelled_mean_plus_weighted_confident_pseudo_label_mean():
    params, batch = make_problem(1)
    logits = linear_apply(params)(batch, train=True, rngs={})["logits"]
    probs = jax.nn.softmax(logits)
    threshold = float(jnp.median(jnp.max(probs, -1)))  # about half the rows pass
    spec = [
        (
            "fixmatch", 1.0,
            {"threshold": threshold, "unlabeled_weight": 0.7, "weak": IDENTITY, "strong": IDENTITY},
        )
    ]  # fmt: skip
    total, metrics = total_loss(spec, params, batch)
    ce = optax.softmax_cross_entropy_with_integer_labels
    supervised = np.mean(ce(logits, batch["label"])[:3])
    confident = np.max(probs, -1) >= threshold
    assert 0 < confident.sum() < B
    consistency = np.mean(confident * ce(logits, jnp.argmax(logits, -1)))
    np.testing.assert_allclose(total, supervised + 0.7 * consistency, rtol=1e-5)
    np.testing.assert_allclose(metrics["supervised"], supervised, rtol=1e-5)
    np.testing.assert_allclose(metrics["pseudo_label_rate"], confident.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["pseudo_label_confidence"], np.mean(np.max(probs, -1)))


def test_cotraining_teaches_each_head_the_other_heads_confident_labels():
    params, batch = make_problem(2)
    out = linear_apply(params)(batch, train=True, rngs={})
    spec = [("cotraining", 1.0, {"threshold": 0.6, "weak": IDENTITY, "strong": IDENTITY})]
    total, metrics = total_loss(spec, params, batch)
    ce = optax.softmax_cross_entropy_with_integer_labels
    expected = 0.0
    for student, teacher in (("image", "audio"), ("audio", "image")):
        own, other = out[f"logits/{student}"], jax.nn.softmax(out[f"logits/{teacher}"])
        confident = np.max(other, -1) >= 0.6
        consistency = np.mean(confident * ce(own, jnp.argmax(other, -1)))
        supervised = np.mean(ce(own, batch["label"])[:3])
        expected += supervised + consistency
        np.testing.assert_allclose(metrics[f"consistency/{student}"], consistency, rtol=1e-5)
        np.testing.assert_allclose(metrics[f"pseudo_label_rate/{student}"], confident.mean())
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_cotraining_skips_pairs_with_a_missing_modality():
    params, batch = make_problem(2)
    spec = [("cotraining", 1.0, {"threshold": 0.0, "weak": IDENTITY, "strong": IDENTITY})]
    _, everything = total_loss(spec, params, batch)
    no_audio = {**batch, "present/audio": jnp.arange(B) >= 4, "present/image": jnp.ones(B, bool)}
    _, metrics = total_loss(spec, params, no_audio)
    assert float(everything["pseudo_label_rate/image"]) == 1.0
    assert float(metrics["pseudo_label_rate/image"]) == 0.5  # audio teaches where present
    assert float(metrics["pseudo_label_rate/audio"]) == 0.5


def test_labelled_row_weights_average_over_labelled_valid_rows():
    batch = {"present/label": LABELLED}
    ctx = LossContext(jnp.zeros((), jnp.int32), jax.random.key(0), jnp.arange(B) < 6)
    weights = labelled_row_weights(batch, ctx, B)
    np.testing.assert_allclose(weights, [2, 2, 2, 0, 0, 0, 0, 0])  # 6 valid rows / 3 labelled
    everything = labelled_row_weights({}, LossContext(jnp.zeros((), jnp.int32), None), B)
    np.testing.assert_allclose(everything, np.ones(B))


def test_misconfigured_consistency_losses_are_config_errors():
    params, batch = make_problem()
    with pytest.raises(ConfigError, match="threshold=1.5"):
        total_loss([("fixmatch", 1.0, {"threshold": 1.5})], params, batch)
    with pytest.raises(ConfigError, match="two or more"):
        total_loss([("cotraining", 1.0, {"modalities": ("image",)})], params, batch)
    with pytest.raises(ConfigError, match="unknown augmentation 'heavy'"):
        total_loss([("fixmatch", 1.0, {"strong": "heavy"})], params, batch)
    loss = build_loss([("fixmatch", 1.0)])
    ctx = LossContext(jnp.zeros((), jnp.int32), jax.random.key(0))
    with pytest.raises(ConfigError, match="needs ctx.apply_fn"):
        loss({"logits": jnp.zeros((B, K))}, batch, ctx)


SPEC = DataSpec(("image", "audio"), num_classes=K, image_shape=(8, 8, 1), audio_shape=(256,))
HEADS = {
    "name": "modality_heads_classifier",
    "features": 8,
    "hidden": (),
    "encoder_kwargs": {"audio": {"frame_length": 64, "hop_length": 64}},
}


def test_modality_heads_average_the_present_heads():
    model = modality_heads_classifier(HEADS, SPEC)
    batch = jax.tree.map(jnp.asarray, dummy_batch(SPEC, 3))
    batch["image"] = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
    batch["audio"] = jax.random.normal(jax.random.key(1), (3, 256))
    variables = jax.jit(model.init)(jax.random.key(2), batch)
    out = jit_apply(model)(variables, batch)
    assert out["logits/image"].shape == out["logits/audio"].shape == (3, K)
    mean = (jax.nn.softmax(out["logits/image"]) + jax.nn.softmax(out["logits/audio"])) / 2
    np.testing.assert_allclose(jnp.exp(out["logits"]), mean, atol=1e-6)
    # Each head sees only its own modality; without audio the prediction is the image head's.
    assert set(variables["params"]) == {"classifiers_image", "classifiers_audio"}
    absent = {**batch, "present/audio": jnp.array([True, False, True])}
    out2 = jit_apply(model)(variables, absent)
    np.testing.assert_allclose(
        jnp.exp(out2["logits"][1]), jax.nn.softmax(out2["logits/image"][1]), atol=1e-6
    )
    with pytest.raises(ConfigError, match="at least two modalities"):
        modality_heads_classifier({**HEADS, "modalities": ("image",)}, SPEC)


def test_mnist_fixmatch_tiny_trains_with_gradient_accumulation(tmp_path):
    """The trainer end to end on idx files with 10 labels; the loss's extra forward pass
    also runs per micro-batch (grad_accum_steps=2)."""
    config = load_config_file("configs/mnist_fixmatch.py:tiny")
    config.data.source.path = str(write_idx(tmp_path / "idx"))
    config.data.data_dir = str(tmp_path / "data")
    config.data.source.splits = ("train", "test")  # the fixture is smaller than the slices
    config.num_devices, config.grad_accum_steps = 1, 2
    config.num_train_steps, config.batch_size, config.log_every = 2, 8, 1
    assert config.data.num_labels == 10 and config.data.labeled_batch_size == 4
    metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    train = [r for r in read_records(tmp_path / "run") if r.get("split") == "train"]
    assert train and all(0.0 <= r["pseudo_label_rate"] <= 1.0 for r in train)
    assert np.isfinite(metrics["test"]["loss"]) and metrics["test"]["num_examples"] == 16
