"""Loss functions, LossContext and build_loss."""

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.stats

from crossjax.errors import ConfigError
from crossjax.losses import LOSSES, LossContext, build_loss
from crossjax.losses.classification import cross_entropy
from crossjax.losses.generative import (
    bernoulli_nll,
    gaussian_kl,
    gaussian_nll,
    neg_elbo,
    reconstruction,
)

CTX = LossContext(step=jnp.int32(0), rng=jax.random.key(0))
B, K, Z = 4, 5, 3
IMAGE_SHAPE = (6, 6, 1)


def vae_outputs_and_batch(seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 5)
    outputs = {
        "z_mean": jax.random.normal(keys[0], (B, Z)),
        "z_logvar": 0.5 * jax.random.normal(keys[1], (B, Z)),
        "recon/image": jax.random.normal(keys[2], (B, *IMAGE_SHAPE)),
        "logits": jax.random.normal(keys[3], (B, K)),
    }
    batch = {
        "image": jax.random.uniform(keys[4], (B, *IMAGE_SHAPE)),
        "label": jnp.array([0, 1, 4, 2], jnp.int32),
    }
    return outputs, batch


def test_loss_context_is_a_pytree_with_static_apply_fn():
    ctx = LossContext(step=jnp.int32(3), rng=jax.random.key(0), apply_fn=lambda b, **kw: b)
    leaves = jax.tree.leaves(ctx)
    assert len(leaves) == 2  # step and rng; apply_fn is static
    out = jax.jit(lambda c: c.step + 1)(ctx)
    assert int(out) == 4


# --- KL ---------------------------------------------------------------------------


def test_gaussian_kl_known_value():
    kl = gaussian_kl(jnp.ones((1, 3)), jnp.zeros((1, 3)))
    np.testing.assert_allclose(kl, [1.5], rtol=1e-6)
    np.testing.assert_allclose(gaussian_kl(jnp.zeros((2, 4)), jnp.zeros((2, 4))), [0.0, 0.0])


def test_gaussian_kl_matches_monte_carlo():
    mean = jnp.array([[0.5, -1.0, 0.2]])
    logvar = jnp.array([[0.3, -0.5, 0.0]])
    std = np.exp(0.5 * np.asarray(logvar))
    samples = np.asarray(mean) + std * np.random.default_rng(0).normal(size=(200_000, 3))
    log_q = scipy.stats.norm.logpdf(samples, np.asarray(mean), std).sum(-1)
    log_p = scipy.stats.norm.logpdf(samples).sum(-1)
    monte_carlo = np.mean(log_q - log_p)
    np.testing.assert_allclose(gaussian_kl(mean, logvar)[0], monte_carlo, rtol=0.02)


# --- reconstruction likelihoods -------------------------------------------------


def test_gaussian_nll_matches_scipy():
    outputs, batch = vae_outputs_and_batch()
    for sigma in (1.0, 0.3):
        expected = (
            -scipy.stats.norm.logpdf(
                np.asarray(batch["image"]), np.asarray(outputs["recon/image"]), sigma
            )
            .reshape(B, -1)
            .sum(-1)
        )
        got = gaussian_nll(outputs["recon/image"], batch["image"], sigma)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
        loss, metrics = reconstruction(outputs, batch, CTX, likelihood="gaussian", sigma=sigma)
        np.testing.assert_allclose(loss, expected, rtol=1e-5)  # one value per example
        np.testing.assert_allclose(metrics["reconstruction"], loss)


def test_bernoulli_nll_matches_optax_sum():
    outputs, batch = vae_outputs_and_batch()
    expected = optax.sigmoid_binary_cross_entropy(outputs["recon/image"], batch["image"])
    expected = np.asarray(expected).reshape(B, -1).sum(-1)
    np.testing.assert_allclose(
        bernoulli_nll(outputs["recon/image"], batch["image"]), expected, rtol=1e-6
    )
    loss, _ = reconstruction(outputs, batch, CTX)  # bernoulli is the default
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_bernoulli_nll_of_binary_targets_is_minus_log_probability():
    logits = jnp.array([[2.0, -1.0]])
    targets = jnp.array([[1.0, 0.0]])
    p = jax.nn.sigmoid(logits)
    expected = -(jnp.log(p[0, 0]) + jnp.log(1 - p[0, 1]))
    np.testing.assert_allclose(bernoulli_nll(logits, targets), [expected], rtol=1e-6)


@pytest.mark.parametrize("beta", [1.0, 0.25])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_neg_elbo_is_reconstruction_plus_beta_kl(beta, likelihood):
    outputs, batch = vae_outputs_and_batch()
    loss, metrics = neg_elbo(outputs, batch, CTX, beta=beta, likelihood=likelihood)
    recon, _ = reconstruction(outputs, batch, CTX, likelihood=likelihood)
    kl = gaussian_kl(outputs["z_mean"], outputs["z_logvar"])
    chex.assert_shape(loss, (B,))
    np.testing.assert_allclose(loss, recon + beta * kl, rtol=1e-6)
    np.testing.assert_allclose(metrics["reconstruction"], recon, rtol=1e-6)
    np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-6)
    np.testing.assert_allclose(metrics["neg_elbo"], recon + kl, rtol=1e-6)


def test_generative_losses_reject_bad_kwargs_and_missing_outputs():
    outputs, batch = vae_outputs_and_batch()
    with pytest.raises(ConfigError, match="likelihood='poisson'; valid: bernoulli, gaussian"):
        reconstruction(outputs, batch, CTX, likelihood="poisson")
    with pytest.raises(ConfigError, match="sigma"):
        reconstruction(outputs, batch, CTX, likelihood="gaussian", sigma=0.0)
    with pytest.raises(ConfigError, match="needs model output 'z_mean'"):
        neg_elbo({"recon/image": outputs["recon/image"]}, batch, CTX)
    with pytest.raises(ConfigError, match="needs model output 'recon/audio'"):
        reconstruction(outputs, batch, CTX, modality="audio")


# --- classification ---------------------------------------------------------------


def test_cross_entropy_of_uniform_logits_is_log_k():
    _, batch = vae_outputs_and_batch()
    loss, metrics = cross_entropy({"logits": jnp.zeros((B, K))}, batch, CTX)
    np.testing.assert_allclose(loss, np.full(B, math.log(K)), rtol=1e-6)
    np.testing.assert_allclose(metrics["cross_entropy"], loss)
    # Label smoothing does not change the loss of uniform logits.
    smoothed, _ = cross_entropy({"logits": jnp.zeros((B, K))}, batch, CTX, label_smoothing=0.1)
    np.testing.assert_allclose(smoothed, math.log(K), rtol=1e-6)


def test_cross_entropy_value_accuracy_and_smoothing():
    outputs, batch = vae_outputs_and_batch()
    logits = np.asarray(outputs["logits"], np.float64)
    labels = np.asarray(batch["label"])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    loss, metrics = cross_entropy(outputs, batch, CTX)
    np.testing.assert_allclose(loss, -log_probs[np.arange(B), labels], rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], logits.argmax(-1) == labels)
    a = 0.2
    targets = np.full((B, K), a / K)
    targets[np.arange(B), labels] += 1 - a
    smoothed, _ = cross_entropy(outputs, batch, CTX, label_smoothing=a)
    np.testing.assert_allclose(smoothed, -(targets * log_probs).sum(-1), rtol=1e-5)
    with pytest.raises(ConfigError, match="label_smoothing"):
        cross_entropy(outputs, batch, CTX, label_smoothing=1.5)


# --- per-example values ------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("cross_entropy", {}),
        ("cross_entropy", {"label_smoothing": 0.1}),
        ("reconstruction", {"likelihood": "gaussian"}),
        ("neg_elbo", {"beta": 0.5}),
    ],
)
def test_per_example_values_are_each_example_alone(name, kwargs):
    """Example i's value does not depend on the others: it equals the loss of a batch of one."""
    outputs, batch = vae_outputs_and_batch()
    fn = LOSSES.get(name)
    values, metrics = jax.jit(lambda o, b: fn(o, b, CTX, **kwargs))(outputs, batch)
    chex.assert_shape(values, (B,))
    for i in range(B):
        one = jax.tree.map(lambda x, i=i: x[i : i + 1], (outputs, batch))
        alone, alone_metrics = fn(*one, CTX, **kwargs)
        np.testing.assert_allclose(values[i], alone[0], rtol=1e-5)
        for key, value in metrics.items():
            np.testing.assert_allclose(value[i], alone_metrics[key][0], rtol=1e-5, err_msg=key)


# --- build_loss ---------------------------------------------------------------------


def test_registered_losses():
    assert {"cross_entropy", "reconstruction", "neg_elbo"} <= set(LOSSES.names())


def test_build_loss_sums_weighted_terms_and_keeps_their_metrics():
    outputs, batch = vae_outputs_and_batch()
    loss_fn = build_loss(
        [("cross_entropy", 2.0), ["neg_elbo", 0.5, {"beta": 3.0, "likelihood": "gaussian"}]]
    )
    total, metrics = jax.jit(loss_fn)(outputs, batch, CTX)
    ce, ce_metrics = cross_entropy(outputs, batch, CTX)
    elbo, elbo_metrics = neg_elbo(outputs, batch, CTX, beta=3.0, likelihood="gaussian")
    np.testing.assert_allclose(total, 2.0 * ce.mean() + 0.5 * elbo.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], total)
    assert set(metrics) == {"loss", *ce_metrics, *elbo_metrics}
    for key, value in {**ce_metrics, **elbo_metrics}.items():
        np.testing.assert_allclose(metrics[key], value.mean(), rtol=1e-6, err_msg=key)


def test_build_loss_resolves_module_paths(tmp_path, monkeypatch):
    (tmp_path / "my_research_losses.py").write_text(
        "import jax.numpy as jnp\n"
        "def mean_logit(outputs, batch, ctx, *, scale=1.0):\n"
        "    value = scale * jnp.mean(outputs['logits'], axis=-1)\n"
        "    return value, {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    outputs, batch = vae_outputs_and_batch()
    loss_fn = build_loss(
        [("cross_entropy", 1.0), ("my_research_losses:mean_logit", 0.1, {"scale": 3.0})]
    )
    total, metrics = loss_fn(outputs, batch, CTX)
    ce, _ = cross_entropy(outputs, batch, CTX)
    custom = 3.0 * jnp.mean(outputs["logits"])
    np.testing.assert_allclose(total, ce.mean() + 0.1 * custom, rtol=1e-6)
    # A term that reports no metrics is still visible under its short name.
    np.testing.assert_allclose(metrics["mean_logit"], custom, rtol=1e-6)


def test_build_loss_accepts_config_dict_kwargs_and_frozen_config():
    outputs, batch = vae_outputs_and_batch()
    expected, _ = neg_elbo(outputs, batch, CTX, beta=2.0)
    config = ml_collections.ConfigDict()
    config.losses = [("neg_elbo", 1, ml_collections.ConfigDict({"beta": 2.0}))]
    frozen_kwargs = ml_collections.FrozenConfigDict({"beta": 2.0})
    for losses in (config.losses, [["neg_elbo", 1, frozen_kwargs]]):
        total, _ = build_loss(losses)(outputs, batch, CTX)
        np.testing.assert_allclose(total, expected.mean(), rtol=1e-6)
    # A FrozenConfigDict cannot hold dicts inside lists, so frozen losses have no kwargs;
    # its lists arrive as tuples.
    frozen = ml_collections.FrozenConfigDict({"losses": [("neg_elbo", 1.0)]})
    total, _ = build_loss(frozen.losses)(outputs, batch, CTX)
    expected, _ = neg_elbo(outputs, batch, CTX)
    np.testing.assert_allclose(total, expected.mean(), rtol=1e-6)


def test_build_loss_renames_colliding_metrics():
    outputs, batch = vae_outputs_and_batch()
    _, metrics = build_loss(
        [("neg_elbo", 1.0), ("reconstruction", 1.0, {"likelihood": "gaussian"})]
    )(outputs, batch, CTX)
    expected, _ = reconstruction(outputs, batch, CTX, likelihood="gaussian")
    np.testing.assert_allclose(metrics["reconstruction/reconstruction"], expected.mean(), rtol=1e-6)


def test_loss_context_apply_fn_reaches_the_loss():
    def consistency(outputs, batch, ctx):
        again = ctx.apply_fn(batch, train=False, rngs={})
        return jnp.mean((again["logits"] - outputs["logits"]) ** 2), {}

    outputs, batch = vae_outputs_and_batch()
    ctx = LossContext(
        step=jnp.int32(0),
        rng=jax.random.key(0),
        apply_fn=lambda b, **kw: {"logits": jnp.zeros((B, K))},
    )
    total, _ = jax.jit(lambda o, b, c: consistency(o, b, c))(outputs, batch, ctx)
    np.testing.assert_allclose(total, jnp.mean(outputs["logits"] ** 2), rtol=1e-6)


@pytest.mark.parametrize(
    "spec,match",
    [
        ([], r"non-empty list"),
        ("cross_entropy", r"non-empty list"),
        ([("cross_entropy",)], r"expected \(name, weight\)"),
        ([("cross_entropy", 1.0, {}, "extra")], r"expected \(name, weight\)"),
        ([(3, 1.0)], r"name must be a string"),
        ([("cross_entropy", "1.0")], r"weight must be a number"),
        ([("cross_entropy", True)], r"weight must be a number"),
        (
            [("hinge", 1.0)],
            r"unknown loss 'hinge'; valid: clip, .*cross_entropy, .*neg_elbo, reconstruction, siglip",
        ),
        (
            [("cross_entropy", 1.0, {"smoothing": 0.1})],
            r"no keyword argument 'smoothing'; valid: label_smoothing",
        ),
        ([("cross_entropy", 1.0, {"batch": 0.1})], r"no keyword argument 'batch'"),
        ([("cross_entropy", 1.0, [0.1])], r"kwargs must be a dict"),
        ([("cross_entropy", 1.0), ("cross_entropy", 0.5)], r"listed twice"),
        ([("no_such_module_xyz:loss", 1.0)], r"cannot import module 'no_such_module_xyz'"),
        ([("math:no_such_fn", 1.0)], r"has no loss named 'no_such_fn'"),
        ([("math:pi", 1.0)], r"not callable"),
    ],
)
def test_build_loss_rejects_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_loss(spec)
    assert "\n" not in str(info.value)
