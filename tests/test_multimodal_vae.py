"""Multimodal VAEs: posterior math against closed forms and numpy, missing modalities
never read, the DReG estimator's expectation, the three losses on a tiny model, configs."""

import functools
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import jit_apply
from scipy.special import logsumexp

from crossjax import train as train_lib
from crossjax.config import base_config
from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.gaussian import gaussian_log_density
from crossjax.losses import LOSSES, LossContext
from crossjax.models import build_model
from crossjax.models.multimodal_vae import (
    mixture_log_density,
    moment_matched_mixture,
    product_of_experts,
    subset_membership,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODALITIES = ("image", "text", "audio")
SPEC = DataSpec(
    modalities=MODALITIES,
    num_classes=10,
    vocab_size=12,
    max_text_len=5,
    image_shape=(4, 4, 1),
    audio_shape=(300,),  # one 256-sample frame of the (256, 128) log spectrogram
)
LOSS_OF = {"poe": "mvae", "moe": "mmvae", "mopoe": "mopoe"}
BATCH = 6
# Rows: all present, no image, no text, no audio, only text, only audio.
PRESENT = {
    "image": [1, 0, 1, 1, 0, 0],
    "text": [1, 1, 0, 1, 1, 0],
    "audio": [1, 1, 1, 0, 0, 1],
}


def model_config(posterior: str, **fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": "multimodal_vae",
            "latent_dim": 3,
            "posterior": posterior,
            "features": 8,
            "encoder_kwargs": {"text": {"embed_dim": 4}, "audio": {"channels": (4,)}},
            "decoder_hidden": (8,),
            "num_samples": 2 if posterior == "moe" else 1,
            **fields,
        }
    )


def make_batch(seed: int = 0, present: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        "image": rng.uniform(size=(BATCH, 4, 4, 1)).astype(np.float32),
        "text": rng.integers(1, SPEC.vocab_size, size=(BATCH, 5)).astype(np.int32),
        "text_mask": rng.uniform(size=(BATCH, 5)) < 0.8,
        "audio": rng.normal(size=(BATCH, 300)).astype(np.float32),
        "label": rng.integers(0, 10, size=(BATCH,)).astype(np.int32),
    }
    if present:
        batch.update({f"present/{m}": np.asarray(v, bool) for m, v in PRESENT.items()})
    return jax.tree.map(jnp.asarray, batch)


@functools.cache  # one initialisation per model for the module (params are read-only)
def initialised(posterior: str, dreg: bool = False):
    model = build_model(model_config(posterior, dreg=dreg), SPEC)
    rngs = {"params": jax.random.key(0), "sample": jax.random.key(1)}
    return model, jax.jit(model.init)(rngs, make_batch(present=False))["params"]


# --- posterior math ----------------------------------------------------------------------


def test_product_of_gaussians_closed_form():
    means = jnp.array([[1.0], [3.0]])
    logvars = jnp.zeros((2, 1))
    mean, logvar = product_of_experts(means, logvars, prior_expert=True)
    np.testing.assert_allclose(mean, [4 / 3], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(logvar), [1 / 3], rtol=1e-6)
    mean, logvar = product_of_experts(means, logvars, prior_expert=False)
    np.testing.assert_allclose(mean, [2.0], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(logvar), [0.5], rtol=1e-6)


def test_product_of_experts_ignores_absent_experts_and_falls_back_to_the_prior():
    means = jnp.array([[[1.0], [3.0]], [[1.0], [np.nan]]])  # (B=2, E=2, Z=1)
    logvars = jnp.array([[[0.0], [np.log(4.0)]], [[0.0], [0.0]]])
    mask = jnp.array([[True, True], [True, False]])
    mean, logvar = product_of_experts(means, logvars, mask, prior_expert=False)
    # Row 0: precisions 1 and 1/4 -> variance 0.8, mean (1 + 3/4) * 0.8.
    np.testing.assert_allclose(mean[:, 0], [1.4, 1.0], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(logvar[:, 0]), [0.8, 1.0], rtol=1e-6)

    def empty(m):  # no expert present and no prior: N(0, I), with finite gradients
        mean, logvar = product_of_experts(m, jnp.zeros((1, 2, 1)), jnp.zeros((1, 2), bool))
        return jnp.sum(mean + logvar)

    def empty_no_prior(m):
        mask = jnp.zeros((1, 2), bool)
        mean, logvar = product_of_experts(m, jnp.zeros((1, 2, 1)), mask, prior_expert=False)
        return jnp.sum(mean) + jnp.sum(logvar)

    assert float(empty_no_prior(jnp.ones((1, 2, 1)))) == 0.0
    assert np.all(np.isfinite(jax.grad(empty_no_prior)(jnp.ones((1, 2, 1)))))
    assert np.all(np.isfinite(jax.grad(empty)(jnp.ones((1, 2, 1)))))


def test_mixture_log_density_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 5, 3))  # (B, N, Z)
    means = rng.normal(size=(2, 3, 3))  # (B, E, Z)
    logvars = rng.normal(size=(2, 3, 3)) * 0.5
    mask = np.array([[True, False, True], [False, True, False]])
    got = mixture_log_density(z, means, logvars, mask)
    for b, n in itertools.product(range(2), range(5)):
        experts = np.flatnonzero(mask[b])
        var = np.exp(logvars[b, experts])
        log_q = -0.5 * np.sum(
            np.log(2 * np.pi * var) + (z[b, n] - means[b, experts]) ** 2 / var, axis=-1
        )
        expected = logsumexp(log_q) - np.log(len(experts))
        np.testing.assert_allclose(got[b, n], expected, rtol=1e-5)
        np.testing.assert_allclose(
            gaussian_log_density(z[b, n], means[b, 0], logvars[b, 0]),
            np.sum(-0.5 * (np.log(2 * np.pi) + logvars[b, 0])
                   - 0.5 * (z[b, n] - means[b, 0]) ** 2 / np.exp(logvars[b, 0])),
            rtol=1e-5,
        )  # fmt: skip


def test_moment_matched_mixture():
    means = jnp.array([[[0.0], [2.0], [9.0]]])
    logvars = jnp.log(jnp.array([[[1.0], [3.0], [5.0]]]))
    mean, logvar = moment_matched_mixture(means, logvars, jnp.array([[True, True, False]]))
    np.testing.assert_allclose(mean, [[1.0]], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(logvar), [[(1 + 0 + 3 + 4) / 2 - 1]], rtol=1e-6)


def test_subsets_of_three_modalities():
    members = subset_membership(3)
    assert members.shape == (7, 3)
    assert len({tuple(r) for r in members}) == 7 and members.any(axis=1).all()
    assert list(members.sum(1)) == [1, 1, 1, 2, 2, 2, 3]  # singletons first, full set last


def test_mopoe_mixes_the_subsets_of_the_present_modalities():
    model, params = initialised("mopoe")
    out = jit_apply(model)({"params": params}, make_batch(), rngs={"sample": jax.random.key(2)})
    # All present: 7 subsets; one missing: the 3 of the other two; one present: just it.
    assert list(out["subset/valid"].sum(-1)) == [7, 3, 3, 3, 1, 1]
    # Each subset's posterior is the PoE of its present members (here the full set of row
    # 1 = the pair text + audio, index 5 in subset_membership order).
    np.testing.assert_allclose(out["subset/mean"][1, 6], out["subset/mean"][1, 5], rtol=1e-6)
    np.testing.assert_allclose(out["z_mean"], out["subset/mean"][:, -1])


# --- the model ---------------------------------------------------------------------------


@pytest.mark.parametrize("posterior", ["poe", "moe", "mopoe"])
def test_absent_modalities_are_never_read(posterior):
    model, params = initialised(posterior, posterior == "moe")
    batch = make_batch(0)
    other = make_batch(1)  # different values everywhere ...
    for m, rows in PRESENT.items():  # ... kept equal where the modality is present
        keep = np.asarray(rows, bool)
        keys = ("text", "text_mask") if m == "text" else (m,)
        for key in keys:
            shape = (-1,) + (1,) * (batch[key].ndim - 1)
            other[key] = jnp.where(keep.reshape(shape), batch[key], other[key])
    rngs = {"sample": jax.random.key(3)}
    a = jit_apply(model)({"params": params}, batch, rngs=rngs)
    b = jit_apply(model)({"params": params}, other, rngs=rngs)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for sources in (("text",), ("image", "audio")):
        gen = functools.partial(
            jit_apply(model), {"params": params}, sources=sources, targets=MODALITIES,
            method="generate",
        )  # fmt: skip
        jax.tree.map(np.testing.assert_array_equal, gen(batch), gen(other))


@pytest.mark.parametrize("posterior", ["poe", "moe"])
def test_generate_reads_only_the_sources(posterior):
    model, params = initialised(posterior)
    batch = make_batch(0, present=False)
    other = dict(make_batch(1, present=False), text=batch["text"], text_mask=batch["text_mask"])
    gen = functools.partial(
        jit_apply(model), {"params": params}, sources=("text",), targets=("image", "text", "audio"),
        method="generate",
    )  # fmt: skip
    out = gen(batch)
    jax.tree.map(np.testing.assert_array_equal, out, gen(other))
    assert out["recon_mean/image"].shape == (BATCH, 4, 4, 1)
    assert out["recon_mean/text"].shape == (BATCH, 5) and out["recon_mean/text"].dtype == jnp.int32
    assert out["recon_mean/audio"].shape == (BATCH, 1, 129)
    assert out["recon/text"].shape == (BATCH, 5, SPEC.vocab_size)
    sampled = gen(batch, sample=True, rngs={"sample": jax.random.key(0)})
    assert not np.allclose(sampled["recon/image"], out["recon/image"])
    with pytest.raises(ValueError, match="sources"):
        gen(batch, sources=("label",))


@pytest.mark.parametrize("posterior", ["poe", "moe", "mopoe"])
def test_jit_matches_eager(posterior):
    model, params = initialised(posterior)
    batch = make_batch()
    ctx = LossContext(step=jnp.asarray(5), rng=jax.random.key(4))
    loss_fn = LOSSES.get(LOSS_OF[posterior])

    def run(p, b):
        out = model.apply({"params": p}, b, train=True, rngs={"sample": jax.random.key(5)})
        return out, loss_fn(out, b, ctx)

    eager = run(params, batch)
    jitted = jax.jit(run)(params, batch)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-5), eager, jitted)


CASES = [
    ("poe", "mvae", {"num_subsets": 2, "beta": 0.5, "warmup_steps": 10}),
    ("poe", "mvae", {"num_subsets": 0}),
    ("mopoe", "mopoe", {"beta": 2.0, "warmup_steps": 3, "weights": {"audio": 0.1}}),
    ("moe", "mmvae", {"objective": "elbo"}),
    ("moe", "mmvae", {"objective": "iwae", "scales": {"audio": 2.0}}),
    ("moe", "mmvae", {"objective": "dreg"}),
]


@pytest.mark.parametrize("posterior,loss,kwargs", CASES)
def test_losses_are_finite_and_differentiable_with_missing_modalities(posterior, loss, kwargs):
    model, params = initialised(posterior, kwargs.get("objective") == "dreg")
    batch = make_batch()
    loss_fn = functools.partial(LOSSES.get(loss), **kwargs)
    ctx = LossContext(step=jnp.asarray(5), rng=jax.random.key(4))

    def objective(p, b):
        out = model.apply({"params": p}, b, train=True, rngs={"sample": jax.random.key(5)})
        values, metrics = loss_fn(out, b, ctx)
        return jnp.mean(values), (values, metrics)

    (value, (values, metrics)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
        params, batch
    )
    assert np.isfinite(value) and values.shape == (batch["image"].shape[0],)
    assert {"kl", "neg_elbo", "recon/image", "recon/text", "recon/audio"} <= set(metrics)
    assert all(np.all(np.isfinite(v)) for v in metrics.values())
    norms = jax.tree.map(lambda g: float(jnp.sum(jnp.square(g))), grads)
    assert all(np.isfinite(n) for n in jax.tree.leaves(norms))
    assert sum(jax.tree.leaves(norms)) > 0
    # Per example: example i's metrics equal those of a batch of one.
    out = jit_apply(model)({"params": params}, batch, rngs={"sample": jax.random.key(5)})
    whole = jax.jit(lambda o, b: loss_fn(o, b, ctx)[1])(out, batch)
    single = jax.jit(jax.vmap(lambda o, b: loss_fn(jax.tree.map(lambda t: t[None], o),
                                                   jax.tree.map(lambda t: t[None], b), ctx)[1]))(out, batch)  # fmt: skip
    for key in ("neg_elbo", "kl", "recon/text"):
        np.testing.assert_allclose(single[key][:, 0], whole[key], rtol=1e-5, err_msg=key)


def test_missing_modalities_do_not_count_in_the_reconstruction_metrics():
    model, params = initialised("poe")
    batch = make_batch()
    out = jit_apply(model)({"params": params}, batch, rngs={"sample": jax.random.key(5)})
    ctx = LossContext(step=jnp.asarray(0), rng=jax.random.key(4))
    per_example = jax.jit(lambda o, b: LOSSES.get("mvae")(o, b, ctx)[1])(out, batch)
    for m, rows in PRESENT.items():
        assert np.all((np.asarray(per_example[f"recon/{m}"]) > 0) == np.asarray(rows, bool)), m


# --- DReG ---------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_present", [True, False])
def test_dreg_gradient_matches_iwae_in_expectation(audio_present):
    """A toy MMVAE with two 1-D modalities x_m | z ~ N(theta_m * z, 1), z ~ N(0, 1), and
    experts q_m = N(mu_m, exp(lv_m)), K = 4: the DReG estimate and the reparameterised
    IWAE gradient are both unbiased for the IWAE gradient, so their means over many
    draws agree (with one expert, plain DReG; with two, the MMVAE code's DReG without
    our correction term is off by 4-9 standard errors in mu)."""
    x = {"image": jnp.array([[1.5]]), "audio": jnp.array([[-0.5]])}
    experts = ("image", "audio")
    k = 4
    params = {
        "mu": jnp.array([0.3, -0.2]),
        "lv": jnp.array([-0.5, 0.4]),
        "theta": jnp.array([1.2, 0.7]),
    }
    likelihoods = {"image": "gaussian", "audio": "gaussian"}

    def outputs(p, key):
        eps = jax.random.normal(key, (1, k, 2))
        z = p["mu"] + jnp.exp(0.5 * p["lv"]) * eps  # (B=1, K, E)
        out = {}
        for i, e in enumerate(experts):
            out[f"present/{e}"] = jnp.array([e == "image" or audio_present])
            out[f"target/{e}"] = x[e]
            out[f"expert/{e}/mean"] = p["mu"][i].reshape(1, 1)
            out[f"expert/{e}/logvar"] = p["lv"][i].reshape(1, 1)
            out[f"expert/{e}/z"] = z[:, :, i, None]
            for j, m in enumerate(experts):
                out[f"expert/{e}/recon/{m}"] = p["theta"][j] * z[:, :, i, None]
                detached = jax.lax.stop_gradient(z[:, :, i, None])
                out[f"expert/{e}/recon_detached/{m}"] = p["theta"][j] * detached
        return out

    def loss(p, key, objective):
        ctx = LossContext(step=jnp.asarray(0), rng=key)
        values = LOSSES.get("mmvae")(
            outputs(p, key), {}, ctx, objective=objective, likelihoods=likelihoods
        )[0]
        return values[0]  # the one example

    keys = jax.random.split(jax.random.key(0), 20000)
    draws = {
        o: jax.jit(jax.vmap(jax.grad(functools.partial(loss, objective=o)), (None, 0)))(
            params, keys
        )
        for o in ("iwae", "dreg")
    }
    for name in ("mu", "lv", "theta"):
        iwae, dreg = np.asarray(draws["iwae"][name]), np.asarray(draws["dreg"][name])
        se = np.sqrt(iwae.var(0) / len(iwae) + dreg.var(0) / len(dreg))
        assert np.all(np.abs(iwae.mean(0) - dreg.mean(0)) <= 4 * se), name
    mu = np.asarray(draws["iwae"]["mu"])
    assert np.abs(mu.mean(0)[0]) > 10 * mu.std(0)[0] / np.sqrt(len(mu))  # far from 0
    np.testing.assert_allclose(draws["iwae"]["theta"], draws["dreg"]["theta"], atol=1e-5)
    # DReG's point: lower-variance encoder gradients.
    assert np.all(draws["dreg"]["lv"].var(0) <= draws["iwae"]["lv"].var(0))
    assert np.all(draws["dreg"]["mu"].var(0)[0] < draws["iwae"]["mu"].var(0)[0])
    # The loss value is the IWAE bound whatever the estimator.
    np.testing.assert_allclose(
        loss(params, keys[0], "dreg"), loss(params, keys[0], "iwae"), rtol=1e-6
    )


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"posterior": "sum"}, "posterior='sum'; valid: poe, moe, mopoe"),
        ({"modalities": ("image", "image_svhn")}, "cannot encode modality 'image_svhn'"),
        ({"modalities": ("image", "image")}, "lists a modality twice"),
        ({"modalities": ()}, "needs at least one modality; valid: image, text, audio"),
        ({"posterior": "moe", "num_samples": 0}, "num_samples=0; valid: an int >= 1"),
        ({"posterior": "poe", "num_samples": 3}, "num_samples=3 with posterior='poe'"),
        ({"posterior": "poe", "dreg": True}, "dreg=True; valid only with posterior 'moe'"),
        ({"likelihoods": {"text": "gaussian"}}, "likelihoods.text='gaussian'; valid: categorical"),
        (
            {"encoder_kwargs": {"audio": {"chanels": (4,)}}},
            "encoder AudioEncoder has no field .chanels.",
        ),
        ({"image_decoder": "upconv"}, "decoder kind 'upconv'"),
        ({"latent": 3}, "has no field 'latent'"),
    ],
)
def test_config_errors(fields, message):
    config = model_config("poe")
    config.update(fields)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(config, SPEC)


def test_modality_the_dataset_lacks():
    spec = DataSpec(modalities=("image",), image_shape=(4, 4, 1))
    with pytest.raises(ConfigError, match="asks for modality 'text'"):
        build_model(model_config("poe", modalities=("image", "text")), spec)


def test_loss_errors():
    model, params = initialised("moe")
    out = model.apply({"params": params}, make_batch(), rngs={"sample": jax.random.key(5)})
    ctx = LossContext(step=jnp.asarray(0), rng=jax.random.key(4))
    with pytest.raises(ConfigError, match="objective='vi'"):
        LOSSES.get("mmvae")(out, {}, ctx, objective="vi")
    with pytest.raises(ConfigError, match="dreg=True"):
        LOSSES.get("mmvae")(out, {}, ctx, objective="dreg")
    with pytest.raises(ConfigError, match="scales="):
        LOSSES.get("mmvae")(out, {}, ctx, scales={"video": 1.0})
    with pytest.raises(ConfigError, match="needs model output .subset/mean."):
        LOSSES.get("mopoe")(out, {}, ctx)


# --- contrastive alignment ---------------------------------------------------------------


def _alignment_reference(a: np.ndarray, b: np.ndarray, temperature: float) -> float:
    """Symmetric InfoNCE with logits -||a_i - b_j||^2 / T, by loops."""
    n = len(a)
    logits = np.array([[-np.sum((a[i] - b[j]) ** 2) / temperature for j in range(n)]
                       for i in range(n)])  # fmt: skip
    rows = [logsumexp(logits[i]) - logits[i, i] for i in range(n)]
    cols = [logsumexp(logits[:, i]) - logits[i, i] for i in range(n)]
    return float(np.mean(0.5 * (np.asarray(rows) + np.asarray(cols))))


def _alignment_outputs(seed: int, present: dict | None = None) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for m in MODALITIES:
        out[f"unimodal/{m}/mean"] = jnp.asarray(rng.normal(size=(BATCH, 3)), jnp.float32)
        out[f"present/{m}"] = jnp.asarray(
            present[m] if present else np.ones(BATCH), bool
        )  # fmt: skip
    return out


def test_latent_alignment_matches_the_infonce_reference():
    out = _alignment_outputs(0)
    ctx = LossContext(step=jnp.asarray(0), rng=jax.random.key(0))
    loss, metrics = LOSSES.get("latent_alignment")(out, {}, ctx, temperature=2.0)
    expected = {}
    for a, b in [("audio", "image"), ("audio", "text"), ("image", "text")]:
        means = (np.asarray(out[f"unimodal/{m}/mean"]) for m in (a, b))
        expected[f"align/{a}-{b}"] = _alignment_reference(*means, 2.0)
        # Per example; every example has every modality, so their mean is the reference.
        np.testing.assert_allclose(
            metrics[f"align/{a}-{b}"].mean(), expected[f"align/{a}-{b}"], 1e-5
        )
    np.testing.assert_allclose(loss.mean(), np.mean(list(expected.values())), rtol=1e-5)
    only, _ = LOSSES.get("latent_alignment")(out, {}, ctx, temperature=2.0, pairs=("text-audio",))
    np.testing.assert_allclose(only.mean(), expected["align/audio-text"], rtol=1e-5)


def test_latent_alignment_ignores_examples_missing_either_modality():
    out = _alignment_outputs(1, PRESENT)
    ctx = LossContext(step=jnp.asarray(0), rng=jax.random.key(0))

    both = np.asarray(PRESENT["image"], bool) & np.asarray(PRESENT["audio"], bool)

    def loss(means):  # the mean over the examples that have both
        changed = {**out, **{f"unimodal/{m}/mean": v for m, v in means.items()}}
        values = LOSSES.get("latent_alignment")(changed, {}, ctx, pairs=("image-audio",))[0]
        return jnp.sum(values) / both.sum()

    means = {m: out[f"unimodal/{m}/mean"] for m in ("image", "audio")}
    values = LOSSES.get("latent_alignment")(out, {}, ctx, pairs=("image-audio",))[0]
    np.testing.assert_array_equal(np.asarray(values)[~both], 0.0)
    expected = _alignment_reference(*(np.asarray(v)[both] for v in means.values()), 1.0)
    np.testing.assert_allclose(loss(means), expected, rtol=1e-5)
    grads = jax.grad(loss)(means)
    for m, g in grads.items():
        assert np.all(np.asarray(g)[~both] == 0) and np.any(np.asarray(g)[both] != 0), m
    noisy = {m: jnp.where(both[:, None], v, 1e3) for m, v in means.items()}
    np.testing.assert_allclose(loss(noisy), expected, rtol=1e-5)


def test_latent_alignment_sharded_over_devices_equals_one_device():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from crossjax.sharding import make_mesh

    mesh = make_mesh()  # the trainer's mesh: every device on "data"
    rng = np.random.default_rng(2)
    out = {
        f"unimodal/{m}/mean": jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
        for m in ("image", "audio")
    }
    out.update(
        {f"present/{m}": jnp.asarray(rng.uniform(size=16) < 0.7) for m in ("image", "audio")}
    )
    ctx = LossContext(step=jnp.asarray(0), rng=jax.random.key(0))
    fn = jax.jit(lambda o: LOSSES.get("latent_alignment")(o, {}, ctx)[0])
    sharded = jax.device_put(out, NamedSharding(mesh, P("data")))
    np.testing.assert_allclose(fn(sharded), fn(out), rtol=1e-6)


@pytest.mark.parametrize("posterior", ["poe", "moe"])
def test_unimodal_posterior_is_what_generation_decodes(posterior):
    model, params = initialised(posterior)
    batch = make_batch(present=False)
    out = model.apply({"params": params}, batch)
    for m in MODALITIES:
        mean = out[f"unimodal/{m}/mean"]
        if posterior == "poe":  # the expert times the N(0, I) prior expert
            var = np.exp(np.asarray(out[f"expert/{m}/logvar"]))
            expected = np.asarray(out[f"expert/{m}/mean"]) / (1.0 + var)
            np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(mean, out[f"expert/{m}/mean"])
        target = "image" if m != "image" else "text"
        generated = model.apply(
            {"params": params}, batch, sources=(m,), targets=(target,), method=model.generate
        )
        decoded = model.apply({"params": params}, target, mean, method=model._decode)
        np.testing.assert_allclose(generated[f"recon/{target}"], decoded, rtol=1e-5, atol=1e-6)


def test_latent_alignment_errors():
    out = _alignment_outputs(0)
    ctx = LossContext(step=jnp.asarray(0), rng=jax.random.key(0))
    align = LOSSES.get("latent_alignment")
    with pytest.raises(ConfigError, match="temperature=0"):
        align(out, {}, ctx, temperature=0)
    for pairs in ("audio-audio", ("image-video",), "image", ()):
        with pytest.raises(ConfigError, match="pairs="):
            align(out, {}, ctx, pairs=pairs)
    with pytest.raises(ConfigError, match="needs a multimodal_vae model"):
        align({"emb/image": out["unimodal/image/mean"]}, {}, ctx)


@pytest.mark.parametrize("name", ["digits_mvae", "digits_mmvae"])  # mopoe: same model as mvae
def test_tiny_configs_train_with_missing_modalities(name, tmp_path, classifier_dir):
    config = _load_config(name, "tiny_missing")
    assert config.data.missing_fraction == 0.5
    evaluators = dict(config.evaluators)  # the coherence judge: a run trained beforehand
    evaluators["coherence"]["classifiers"] = {"image": {"workdir": str(classifier_dir)}}
    config.evaluators = tuple(evaluators.items())
    metrics = train_lib.train_and_evaluate(config, str(tmp_path))["test"]
    assert np.isfinite(metrics["neg_elbo"]) and metrics["num_examples"] > 0
    for pair in ("text_to_image", "audio_to_image", "text+audio_to_image"):
        assert 0 <= metrics[f"coherence/{pair}"] <= 1
    assert 0 <= metrics["latent_probe/accuracy"] <= 1
    assert (tmp_path / "images" / "audio_to_image.png").exists()


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """The tiny image classifier, trained as a run of its own (evaluation never trains)."""
    from crossjax.config import load_config_file

    workdir = tmp_path_factory.mktemp("coherence") / "digits_image_tiny"
    train_lib.train_and_evaluate(
        load_config_file(f"{CONFIGS / 'digits_image.py'}:tiny"), str(workdir)
    )
    return workdir


def _load_config(name: str, variant: str) -> ml_collections.ConfigDict:
    import importlib

    return importlib.import_module(f"configs.{name}").get_config(variant)


def test_config_variants():
    for name in ("digits_mvae", "digits_mmvae", "digits_mopoe", "shapes_mvae"):
        default, tiny = _load_config(name, None), _load_config(name, "tiny")
        assert default.model.name == "multimodal_vae" and tiny.num_train_steps < 20
        names = [name for name, _ in default.evaluators]
        assert names[:3] == ["reconstruction_images", "crossmodal_images", "linear_probe"]
        assert base_config().keys() <= default.keys()
    assert _load_config("digits_mvae", "missing").data.missing_fraction == 0.5
    clean = _load_config("digits_mopoe", "clean_missing")
    judge = dict(clean.evaluators)["coherence"]["classifiers"]["image"]
    assert clean.data.name == "crossjax_digits/clean" and clean.data.missing_fraction == 0.5
    assert clean.optimizer.weight_decay == 1.0
    assert (
        _load_config("digits_mopoe", None).optimizer.weight_decay
        == base_config().optimizer.weight_decay
    )
    assert judge["trained_with"] == "configs/digits_image.py:clean" and judge["workdir"].endswith(
        "_clean"
    )
    assert _load_config("digits_mvae", "missing_clean").data.name == "crossjax_digits/clean"
    # MVAE gets the contrastive term unless `noalign`; the other models do not have it.
    assert [t[0] for t in _load_config("digits_mvae", None).losses] == ["mvae", "latent_alignment"]
    assert [t[0] for t in _load_config("digits_mvae", "clean_noalign").losses] == ["mvae"]
    for name, variant in [("digits_mopoe", "huge"), ("digits_mopoe", "noalign"),
                          ("digits_mvae", "clean_"), ("digits_mmvae", "tiny_huge")]:  # fmt: skip
        with pytest.raises(ValueError, match="unknown config variant"):
            _load_config(name, variant)
    with pytest.raises(ValueError, match="clean flag is for crossjax_digits"):
        _load_config("shapes_mvae", "clean")
