"""The VAE family: likelihoods, decoders per modality, KL warm-up, IWAE bound and evaluator."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.special
import scipy.stats

from configs import digits_vae
from crossjax import train as train_lib
from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.losses import LossContext
from crossjax.losses.generative import (
    LIKELIHOODS,
    iwae_bound,
    iwae_log_weights,
    kl_weight,
    likelihood_mean,
    neg_elbo,
    nll,
)
from crossjax.losses.generative import iwae as iwae_loss
from crossjax.models import build_model
from crossjax.models.decoders import (
    DEFAULT_LIKELIHOOD,
    AudioDecoder,
    ImageDecoder,
    TextDecoder,
    audio_target,
    build_decoder,
    spectrogram_shape,
)

SPEC = DataSpec(
    modalities=("image", "text", "audio"),
    num_classes=10,
    vocab_size=20,
    max_text_len=6,
    image_shape=(8, 8, 1),
    audio_shape=(1000,),
)
B, Z = 3, 4
CTX = LossContext(step=jnp.int32(0), rng=jax.random.key(0))


def _normal(seed, shape):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float64)


# --- likelihoods --------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_gaussian_and_laplace_nll_match_scipy(scale):
    out, target = _normal(0, (B, 5, 2)), _normal(1, (B, 5, 2))
    for name, dist in (("gaussian", scipy.stats.norm), ("laplace", scipy.stats.laplace)):
        expected = -dist.logpdf(target, out, scale).reshape(B, -1).sum(-1)
        got = nll(name, jnp.asarray(out), jnp.asarray(target), scale=scale)
        assert got.dtype == jnp.float32 and got.shape == (B,)
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_nll_of_binary_targets_matches_scipy():
    logits = _normal(0, (B, 7))
    target = (_normal(1, (B, 7)) > 0).astype(np.float64)
    expected = -scipy.stats.bernoulli.logpmf(target, scipy.special.expit(logits)).sum(-1)
    np.testing.assert_allclose(nll("bernoulli", logits, target), expected, rtol=1e-5)


def test_categorical_nll_with_mask():
    logits = _normal(0, (B, 6, 5))
    ids = np.asarray(jax.random.randint(jax.random.key(1), (B, 6), 0, 5))
    mask = np.arange(6)[None, :] < np.array([[2], [6], [0]])
    log_probs = scipy.special.log_softmax(logits, axis=-1)
    picked = np.take_along_axis(log_probs, ids[..., None], -1)[..., 0]
    np.testing.assert_allclose(nll("categorical", logits, ids), -picked.sum(-1), rtol=1e-5)
    got = nll("categorical", logits, ids, mask=mask)
    np.testing.assert_allclose(got, -(picked * mask).sum(-1), rtol=1e-5)
    assert got[2] == 0.0


def test_nll_errors_and_likelihood_mean():
    x = jnp.zeros((B, 4))
    with pytest.raises(ConfigError, match="likelihood='poisson'; valid: " + ", ".join(LIKELIHOODS)):
        nll("poisson", x, x)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 5\)"):
        nll("gaussian", x, jnp.zeros((B, 5)))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 4\)"):
        nll("categorical", x, x.astype(jnp.int32))
    with pytest.raises(ConfigError, match="scale"):
        nll("laplace", x, x, scale=0.0)
    logits = jnp.array([[[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]]])
    np.testing.assert_array_equal(likelihood_mean("categorical", logits), [[1, 0]])
    assert likelihood_mean("categorical", logits).dtype == jnp.int32
    np.testing.assert_allclose(likelihood_mean("bernoulli", x), 0.5)
    assert likelihood_mean("laplace", logits) is logits


# --- decoders -----------------------------------------------------------------------


def _decode(module, z):
    variables = module.init(jax.random.key(0), z)
    return module.apply(variables, z)


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3), (7, 9, 2)])
@pytest.mark.parametrize("kind", ["mlp", "deconv"])
def test_image_decoder_shapes(shape, kind):
    out = _decode(ImageDecoder(shape, (8, 4), kind, jnp.bfloat16), jnp.ones((B, Z)))
    assert out.shape == (B, *shape) and out.dtype == jnp.float32


def test_text_and_audio_decoder_shapes():
    logits = _decode(TextDecoder(6, 20, (16,)), jnp.ones((B, Z)))
    assert logits.shape == (B, 6, 20) and logits.dtype == jnp.float32
    frames_bins = spectrogram_shape(1000, 256, 128)
    assert frames_bins == (6, 129)
    spectrogram = _decode(AudioDecoder(frames_bins, (16,)), jnp.ones((B, Z)))
    assert spectrogram.shape == (B, 6, 129)
    assert audio_target(jnp.zeros((B, 1000))).shape == (B, 6, 129)


def test_build_decoder_by_modality():
    z = jnp.ones((B, Z))
    for modality, shape in [
        ("image", (B, 8, 8, 1)),
        ("image_1", (B, 8, 8, 1)),
        ("text", (B, 6, 20)),
        ("audio", (B, 6, 129)),
    ]:
        assert _decode(build_decoder(modality, SPEC, hidden=(8,)), z).shape == shape
    assert set(DEFAULT_LIKELIHOOD) == {"image", "text", "audio", "label"}
    with pytest.raises(ConfigError, match="no decoder for modality 'video'"):
        build_decoder("video", SPEC, hidden=(8,))
    with pytest.raises(ConfigError, match="decoder kind 'deconv' for modality 'text'"):
        build_decoder("text", SPEC, hidden=(8,), kind="deconv")


# --- VAE models ---------------------------------------------------------------------


def _vae(**fields):
    config = ml_collections.ConfigDict({"name": "vae", "hidden": (16,), "latent_dim": Z, **fields})
    return build_model(config, SPEC)


def _batch(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "image": jax.random.uniform(k1, (B, *SPEC.image_shape)),
        "audio": jax.random.normal(k2, (B, *SPEC.audio_shape)),
    }


def test_deconv_image_vae_and_laplace_audio_vae():
    batch = _batch()
    image_vae = _vae(decoder="deconv", decoder_hidden=(8, 4), likelihood="gaussian")
    variables = image_vae.init(jax.random.key(0), batch)
    out = image_vae.apply(variables, batch)
    assert out["recon/image"].shape == (B, 8, 8, 1) and "target/image" not in out
    np.testing.assert_array_equal(out["recon_mean/image"], out["recon/image"])

    audio_vae = _vae(modality="audio", likelihood="laplace")
    variables = audio_vae.init(jax.random.key(0), batch)
    out = audio_vae.apply(variables, batch)
    np.testing.assert_allclose(out["target/audio"], audio_target(batch["audio"]), rtol=1e-6)
    assert out["recon/audio"].shape == out["target/audio"].shape == (B, 6, 129)
    loss, metrics = neg_elbo(out, batch, CTX, modality="audio", likelihood="laplace")
    expected = nll("laplace", out["recon/audio"], out["target/audio"])  # per example
    np.testing.assert_allclose(metrics["reconstruction"], expected, rtol=1e-6)


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"likelihood": "categorical"}, "likelihood='categorical'; valid: bernoulli, gaussian"),
        ({"decoder": "conv"}, "decoder='conv' for image; valid: mlp, deconv"),
        ({"modality": "audio", "decoder": "deconv"}, "decoder='deconv' for audio; valid: mlp"),
        ({"decoder_hidden": (0,)}, "decoder_hidden=\\(0,\\); valid: a list of positive ints"),
    ],
)
def test_vae_config_errors(fields, match):
    with pytest.raises(ConfigError, match=match):
        _vae(**fields)


# --- KL warm-up ---------------------------------------------------------------------


def test_kl_warmup_weight_and_unweighted_bound():
    for step, weight in [(0, 0.0), (50, 0.25), (100, 0.5), (250, 0.5)]:
        np.testing.assert_allclose(kl_weight(jnp.int32(step), 0.5, 100), weight, rtol=1e-6)
    np.testing.assert_allclose(kl_weight(jnp.int32(0), 0.5, 0), 0.5)
    model = _vae()
    batch = _batch()
    out = model.apply(model.init(jax.random.key(0), batch), batch)
    ctx = LossContext(step=jnp.int32(25), rng=jax.random.key(0))
    loss, metrics = neg_elbo(out, batch, ctx, beta=2.0, warmup_steps=100)
    np.testing.assert_allclose(metrics["kl_weight"], 0.5)
    np.testing.assert_allclose(loss, metrics["reconstruction"] + 0.5 * metrics["kl"], rtol=1e-6)
    np.testing.assert_allclose(
        metrics["neg_elbo"], metrics["reconstruction"] + metrics["kl"], rtol=1e-6
    )
    with pytest.raises(ConfigError, match="warmup_steps=-1"):
        neg_elbo(out, batch, ctx, warmup_steps=-1)


# --- IWAE ---------------------------------------------------------------------------

D, SIGMA = 5, 0.5


def _linear_gaussian(posterior_scale: float, logvar_shift: float):
    """p(z) = N(0, I_2), p(x|z) = N(W z + b, SIGMA^2 I_D) with orthogonal columns of W, so
    the exact posterior is diagonal; q(z|x) = that posterior with its mean scaled by
    `posterior_scale` and its log-variance shifted by `logvar_shift`. Returns an
    apply_fn and log p(x) in closed form."""
    w = np.linalg.qr(_normal(0, (D, 2)))[0] * np.array([2.0, 0.7])
    b = _normal(1, (D,))
    precision = np.eye(2) + w.T @ w / SIGMA**2  # diagonal
    post_cov = np.linalg.inv(precision)
    gain = jnp.asarray(post_cov @ w.T / SIGMA**2, jnp.float32)
    logvar = jnp.asarray(np.log(np.diag(post_cov)) + logvar_shift, jnp.float32)

    def apply_fn(batch, *, train, rngs):
        z_mean = posterior_scale * (batch["x"] - b) @ gain.T
        z_logvar = jnp.broadcast_to(logvar, z_mean.shape)
        eps = jax.random.normal(rngs["sample"], z_mean.shape)
        z = z_mean + jnp.exp(0.5 * z_logvar) * eps
        return {"z": z, "z_mean": z_mean, "z_logvar": z_logvar, "recon/x": z @ w.T + b}

    def log_px(x):
        return scipy.stats.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(D)).logpdf(x)

    return apply_fn, log_px


def _bound(apply_fn, x, k, seed=0, **kwargs):
    log_w = iwae_log_weights(
        apply_fn,
        {"x": jnp.asarray(x, jnp.float32)},
        jax.random.key(seed),
        num_samples=k,
        modality="x",
        likelihood="gaussian",
        scale=SIGMA,
        **kwargs,
    )
    assert log_w.shape == (k, x.shape[0])
    return np.asarray(iwae_bound(log_w), np.float64)


def test_iwae_with_the_exact_posterior_is_log_px_for_any_k():
    apply_fn, log_px = _linear_gaussian(1.0, 0.0)
    x = _normal(2, (8, D)) * 2.0
    for k in (1, 3):
        np.testing.assert_allclose(_bound(apply_fn, x, k), log_px(x), rtol=1e-4, atol=1e-4)


def test_iwae_bound_rises_towards_log_px_as_k_grows():
    apply_fn, log_px = _linear_gaussian(0.6, 1.0)  # a poor posterior: a loose ELBO
    x = _normal(3, (512, D)) * 2.0
    exact = log_px(x).mean()
    bounds = [_bound(apply_fn, x, k).mean() for k in (1, 4, 32, 512)]
    gaps = exact - np.array(bounds)
    # The ELBO gap is ~2.8 nats; each larger K closes most of what is left (seeds 0-2 give
    # gaps of ~2.8, ~0.78, 0.09-0.17, ~0.02), and the bound stays below log p(x).
    assert gaps[0] > 2.0, gaps
    assert np.all(gaps[1:] < 0.4 * gaps[:-1]), gaps
    assert 0 < gaps[-1] < 0.05, gaps


def _tiny_vae_apply():
    """A freshly initialised tiny image VAE as `apply_fn(batch, *, train, rngs)`, and a batch."""
    model = _vae()
    batch = _batch()
    params = model.init(jax.random.key(0), batch)

    def apply(b, *, train, rngs):
        return model.apply(params, b, train=train, rngs=rngs)

    return apply, batch


def test_iwae_chunked_equals_vmapped_and_encoder_runs_once():
    apply_fn, _ = _linear_gaussian(0.6, 1.0)
    x = _normal(4, (6, D))
    np.testing.assert_allclose(
        _bound(apply_fn, x, 8, chunk_size=3), _bound(apply_fn, x, 8), rtol=1e-5
    )
    # In a real VAE the encoder's first matmul reads the (B, 64) pixels once, not per sample.
    apply, batch = _tiny_vae_apply()

    jaxpr = jax.make_jaxpr(
        lambda b: iwae_log_weights(
            apply, b, jax.random.key(0), num_samples=7, modality="image", likelihood="bernoulli"
        )
    )(batch)
    pixel_matmuls = [
        e.invars[0].aval.shape
        for e in jaxpr.jaxpr.eqns
        if e.primitive.name == "dot_general" and e.invars[0].aval.shape[-1] == 64
    ]
    assert pixel_matmuls == [(B, 64)], pixel_matmuls


def test_iwae_bound_beats_the_elbo_on_a_tiny_vae():
    apply, batch = _tiny_vae_apply()

    def log_weights(k, seed):
        return iwae_log_weights(
            apply,
            batch,
            jax.random.key(seed),
            num_samples=k,
            modality="image",
            likelihood="bernoulli",
        )

    # 256 independent single-sample bounds average to the ELBO; 16 independent K = 16
    # bounds (other samples) average to a tighter bound.
    elbo = float(jnp.mean(iwae_bound(log_weights(256, 0)[None])))
    iwae16 = float(jnp.mean(iwae_bound(log_weights(256, 1).reshape(16, 16, B))))
    assert iwae16 > elbo + 1.0, (iwae16, elbo)  # ~2.3 nats apart


def test_iwae_loss_trains_and_needs_apply_fn():
    model = _vae()
    batch = _batch()
    params = model.init(jax.random.key(0), batch)["params"]

    def loss_of(p, k):
        ctx = LossContext(
            step=jnp.int32(0),
            rng=jax.random.key(1),
            apply_fn=lambda b, *, train, rngs: model.apply(
                {"params": p}, b, train=train, rngs=rngs
            ),
        )
        values, metrics = iwae_loss({}, batch, ctx, num_samples=k)
        return jnp.mean(values), (values, metrics)

    (value, (values, metrics)), grads = jax.value_and_grad(loss_of, has_aux=True)(params, 3)
    chex.assert_shape(values, (B,))
    assert np.isfinite(value) and np.array_equal(metrics["iwae"], values)
    chex.assert_tree_all_finite(grads)
    with pytest.raises(ConfigError, match="needs ctx.apply_fn"):
        iwae_loss({}, batch, CTX)
    with pytest.raises(ConfigError, match="num_samples=0"):
        loss_of(params, 0)


# --- end to end ---------------------------------------------------------------------


def test_digits_vae_iwae_tiny_trains_and_reports_iwae_nll(tmp_path):
    config = digits_vae.get_config("iwae_tiny")
    config.evaluators = (("iwae_nll", {"num_samples": 8, "chunk_size": 4}),)
    ((name, weight, kwargs),) = config.losses
    config.losses = ((name, weight, {**kwargs, "warmup_steps": 4}),)  # done by step 8
    metrics = train_lib.train_and_evaluate(config, str(tmp_path))["test"]
    assert np.isfinite(metrics["iwae_nll"]) and np.isfinite(metrics["neg_elbo"])
    assert metrics["iwae_nll"] < metrics["neg_elbo"]
    # Evaluated at the trained step, past the warm-up: the loss holds the full KL term.
    assert metrics["loss"] == pytest.approx(metrics["neg_elbo"], rel=1e-5)
    evaluators = dict(digits_vae.get_config("iwae").evaluators)
    assert evaluators["iwae_nll"]["num_samples"] == 64
