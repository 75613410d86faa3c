"""M2 (Kingma et al. 2014): the loss against a plain loop reference, the label mask by
gradient, and a tiny run of configs/mnist_m2.py on idx files written here."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossjax import train as train_lib
from crossjax.config import load_config_file
from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.losses import LossContext, build_loss
from crossjax.losses.semi_supervised_vae import m2
from crossjax.models import build_model
from tests.test_real_data import write_idx

B, K, Z, SHAPE = 5, 3, 2, (2, 2, 1)
CTX = LossContext(step=jnp.zeros((), jnp.int32), rng=jax.random.key(0))


def _outputs_and_batch(seed=0):
    rng = np.random.default_rng(seed)
    outputs = {
        "logits": rng.normal(size=(B, K)),
        "m2/z_mean": rng.normal(size=(B, K, Z)),
        "m2/z_logvar": 0.3 * rng.normal(size=(B, K, Z)),
        "m2/recon/image": rng.normal(size=(B, K, *SHAPE)),
    }
    batch = {
        "image": rng.random((B, *SHAPE)),
        "label": np.array([0, 2, 1, 1, 0]),
        "present/label": np.array([True, False, True, False, False]),
    }
    as_jax = lambda d: {k: jnp.asarray(v) for k, v in d.items()}  # noqa: E731
    return outputs, batch, as_jax(outputs), as_jax(batch)


def _reference_neg_elbo(outputs, batch, i, y):
    """-log p(x|y,z) (Bernoulli on grey levels) + KL(q(z|x,y) || N(0, I)) - log p(y)."""
    logit = outputs["m2/recon/image"][i, y].ravel()
    x = batch["image"][i].ravel()
    nll = sum(
        max(t, 0) - t * xv + math.log1p(math.exp(-abs(t))) for t, xv in zip(logit, x, strict=True)
    )
    mean, logvar = outputs["m2/z_mean"][i, y], outputs["m2/z_logvar"][i, y]
    kl = sum(0.5 * (math.exp(lv) + m * m - 1 - lv) for m, lv in zip(mean, logvar, strict=True))
    return nll + kl + math.log(K)


def test_m2_terms_equal_their_enumeration_formulas():
    alpha = 2.5
    outputs, batch, jo, jb = _outputs_and_batch()
    values, metrics = m2(jo, jb, CTX, alpha=alpha)
    assert values.shape == (B,) and metrics["entropy"].shape == (B,)
    for i in range(B):
        logits = outputs["logits"][i]
        q = np.exp(logits - logits.max())
        q /= q.sum()
        if batch["present/label"][i]:  # -ELBO(x, y) + alpha * CE(q(y|x), y)
            y = batch["label"][i]
            want = _reference_neg_elbo(outputs, batch, i, y) - alpha * math.log(q[y])
        else:  # sum_y q(y|x) (-ELBO(x, y)) - H(q(y|x)), one class at a time
            want = 0.0
            for y in range(K):
                want += q[y] * _reference_neg_elbo(outputs, batch, i, y)
            want -= -sum(p * math.log(p) for p in q)
        assert float(values[i]) == pytest.approx(want, rel=1e-5), i


def test_m2_without_present_label_is_fully_labelled():
    _, _, jo, jb = _outputs_and_batch()
    labelled_everywhere = {**jb, "present/label": jnp.ones(B, bool)}
    without = {k: v for k, v in jb.items() if k != "present/label"}
    np.testing.assert_allclose(m2(jo, without, CTX)[0], m2(jo, labelled_everywhere, CTX)[0])


def test_an_unlabelled_label_value_changes_no_m2_gradient():
    spec = DataSpec(modalities=("image",), num_classes=K, image_shape=(4, 4, 1))
    model = build_model(
        {"name": "m2", "hidden": (8,), "classifier_hidden": (8,), "latent_dim": Z}, spec
    )
    rng = np.random.default_rng(1)
    batch = {
        "image": jnp.asarray(rng.random((B, 4, 4, 1)), jnp.float32),
        "present/label": jnp.asarray([True, False, True, False, True]),
    }
    params = jax.jit(model.init)({"params": jax.random.key(0), "sample": jax.random.key(1)}, batch)
    loss = build_loss([("m2", 1.0, {"alpha": 3.0})])

    @jax.jit  # one program for the three label sets
    def grads(labels):
        b = {**batch, "label": labels}

        def total(p):
            outputs = model.apply(p, b, train=True, rngs={"sample": jax.random.key(2)})
            return loss(outputs, b, CTX)[0]

        return jax.grad(total)(params)

    base = grads(jnp.asarray([0, 1, 2, 0, 1]))
    hidden = grads(jnp.asarray([0, 2, 2, 1, 1]))  # rows 1 and 3 are unlabelled
    shown = grads(jnp.asarray([1, 1, 2, 0, 1]))  # row 0 is labelled
    for a, b in zip(jax.tree.leaves(hidden), jax.tree.leaves(base), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(shown), jax.tree.leaves(base), strict=True)
    )


def test_m2_model_outputs_every_class():
    spec = DataSpec(modalities=("image",), num_classes=K, image_shape=(4, 4, 1))
    model = build_model({"name": "m2", "hidden": (8, 6), "latent_dim": Z}, spec)
    batch = {"image": jnp.zeros((B, 4, 4, 1))}
    outputs = jax.eval_shape(
        lambda: model.init_with_output({"params": jax.random.key(0)}, batch)[0]
    )
    assert outputs["logits"].shape == (B, K)
    assert outputs["m2/z_mean"].shape == outputs["m2/z_logvar"].shape == (B, K, Z)
    assert outputs["m2/recon/image"].shape == (B, K, 4, 4, 1)


def test_mnist_m2_tiny_trains_on_idx_files_with_few_labels(tmp_path):
    config = load_config_file("configs/mnist_m2.py:tiny")
    config.data.source.path = str(write_idx(tmp_path / "idx"))
    config.data.data_dir = str(tmp_path / "data")
    config.data.source.splits = ("train", "test")  # the fixture is smaller than the slices
    config.num_devices = 1  # compiles faster; sharding is tested with the data contract
    config.num_train_steps, config.batch_size, config.log_every = 4, 8, 2
    config.checkpoint_every = 4
    metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(metrics["test"]["loss"]) and 0 <= metrics["test"]["accuracy"] <= 1
    assert metrics["test"]["num_examples"] == 16


def test_label_count_variants_set_alpha_for_their_count():
    from configs import mnist_m2

    for count in mnist_m2.LABEL_COUNTS:
        config = load_config_file(f"configs/mnist_m2.py:{count}")
        assert config.data.num_labels == count
        alpha = config.losses[0][2]["alpha"]
        assert alpha == pytest.approx(100 * 0.1 * 54_000 / (54_000 - count) * (128 - 32) / 32)
    with pytest.raises(ConfigError, match="unknown config variant"):
        load_config_file("configs/mnist_m2.py:500")
