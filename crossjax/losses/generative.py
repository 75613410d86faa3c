"""Likelihood and KL terms for autoencoders and VAEs.

`nll(likelihood, output, target)` reads a decoder's raw `output` as
  - "bernoulli": logits of independent Bernoullis, same shape as the target in [0, 1];
    for non-binary targets (grey pixels) this is the usual "continuous targets in BCE"
    objective, not a normalised density.
  - "gaussian": the mean of N(output, scale^2) with a FIXED std `scale`, with the full
    normalising constant, so the value is a true negative log-density in nats.
  - "laplace": the location of Laplace(output, scale) with a FIXED scale b = `scale`,
    full constant log(2b): robust to heavy-tailed targets such as log spectrograms.
  - "categorical": logits (B, ..., V) of integer ids (B, ...).
Per-example values are summed over all non-batch dims; every loss returns them (B,).

The reconstruction losses compare `recon/<modality>` against `target/<modality>` when the
model outputs one (an audio VAE reconstructs the log spectrogram of the waveform, see
`crossjax.models.decoders.audio_target`), else against `batch[modality]`.

Losses: "reconstruction", "neg_elbo" (beta-VAE with optional linear KL warm-up) and
"iwae" (the importance-weighted bound, Burda et al. 2016, from K extra forward passes
through `ctx.apply_fn`; `iwae_log_weights` is shared with the "iwae_nll" evaluator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from crossjax.errors import ConfigError
from crossjax.gaussian import gaussian_log_density
from crossjax.losses.base import LOSSES, LossContext, Metrics, require_output
from crossjax.models.decoders import (  # noqa: F401 - re-exported: decoders own them
    LIKELIHOODS,
    check_likelihood,
    likelihood_mean,
)
from crossjax.requirements import Requires, requires


def _sum_per_example(x: jax.Array) -> jax.Array:
    """(B, ...) -> (B,)."""
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example: (B, Z), (B, Z) -> (B,)."""
    mean = mean.astype(jnp.float32)
    logvar = logvar.astype(jnp.float32)
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def bernoulli_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log Bernoulli(targets | sigmoid(logits)) summed per example: (B, ...) -> (B,)."""
    return nll("bernoulli", logits, targets)


def gaussian_nll(mean: jax.Array, targets: jax.Array, sigma: float = 1.0) -> jax.Array:
    """-log N(targets | mean, sigma^2 I) summed per example: (B, ...) -> (B,)."""
    return nll("gaussian", mean, targets, scale=sigma)


def _elementwise_nll(
    likelihood: str, output: jax.Array, target: jax.Array, scale: float
) -> jax.Array:
    """Per-position NLL: (B, ...) for every likelihood (categorical drops the V axis)."""
    if likelihood == "categorical":
        return optax.softmax_cross_entropy_with_integer_labels(output, target.astype(jnp.int32))
    target = target.astype(jnp.float32)
    if likelihood == "bernoulli":
        return optax.sigmoid_binary_cross_entropy(output, target)
    if likelihood == "gaussian":
        z = (target - output) / scale
        return 0.5 * jnp.square(z) + math.log(scale) + 0.5 * math.log(2.0 * math.pi)
    return jnp.abs(target - output) / scale + math.log(2.0 * scale)  # laplace


def nll(
    likelihood: str,
    output: jax.Array,
    target: jax.Array,
    *,
    scale: float = 1.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Per-example negative log-likelihood (B,) float32 in nats, summed over non-batch dims.

    output: logits (bernoulli), mean (gaussian, std `scale`) or location (laplace, scale
    `scale`), each shaped like `target` (B, ...); for "categorical", logits (B, ..., V)
    of int ids `target` (B, ...). mask: optional (B, ...) bool, target-shaped; False
    positions add nothing. Raises ConfigError for an unknown likelihood or scale <= 0,
    ValueError when the shapes do not match.
    """
    check_likelihood(likelihood, "nll")
    if isinstance(scale, (int, float)) and not scale > 0:
        raise ConfigError(f"nll has scale={scale}; valid: scale > 0")
    expected = output.shape[:-1] if likelihood == "categorical" else output.shape
    if expected != target.shape:
        raise ValueError(
            f"nll({likelihood!r}): output of shape {output.shape} does not match target of "
            f"shape {target.shape}"
            + (" (expected output = target shape + (V,))" if likelihood == "categorical" else "")
        )
    if mask is not None and mask.shape != target.shape:
        raise ValueError(f"nll: mask of shape {mask.shape} does not match target {target.shape}")
    values = _elementwise_nll(likelihood, output.astype(jnp.float32), target, scale)
    if mask is not None:
        values = jnp.where(mask, values, 0.0)
    return _sum_per_example(values)


def reconstruction_target(
    outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], modality: str
) -> jax.Array:
    """What `recon/<modality>` is scored against: `target/<modality>` if the model
    outputs it (e.g. the audio spectrogram), else `batch[modality]`. (B, ...)."""
    return outputs.get(f"target/{modality}", batch[modality])


def reconstruction_nll(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    *,
    modality: str,
    likelihood: str,
    sigma: float,
    loss: str,
) -> jax.Array:
    """Per-example NLL (B,) of the reconstruction target under `outputs["recon/<m>"]`.

    `sigma` is the `scale` of `nll` (gaussian std, laplace b). A categorical target
    (text) is scored at every position, padding included, so lengths are modelled too.
    """
    check_likelihood(likelihood, f"loss {loss!r}")
    if not sigma > 0:
        raise ConfigError(f"loss {loss!r} has sigma={sigma}; valid: sigma > 0")
    recon = require_output(outputs, f"recon/{modality}", loss)
    try:
        return nll(likelihood, recon, reconstruction_target(outputs, batch, modality), scale=sigma)
    except ValueError as e:
        raise ValueError(f"loss {loss!r}, recon/{modality}: {e}") from None


def kl_weight(step: jax.Array, beta: float, warmup_steps: int) -> jax.Array:
    """The KL weight at `step` (scalar): beta * min(1, step / warmup_steps), or beta when
    warmup_steps = 0 (linear KL warm-up / annealing)."""
    if warmup_steps <= 0:
        return jnp.asarray(beta, jnp.float32)
    fraction = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)
    return beta * fraction


def _needs(*outputs: str):
    """Declared needs of a loss with a `modality` kwarg: `recon/<modality>` + `outputs`."""
    return lambda kw: Requires(outputs=(f"recon/{kw.get('modality', 'image')}", *outputs))


@LOSSES.register("reconstruction")
@requires(_needs())
def reconstruction(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    modality: str = "image",
    likelihood: str = "bernoulli",
    sigma: float = 1.0,
) -> tuple[jax.Array, Metrics]:
    """The per-example reconstruction NLL (nats), (B,); metric `reconstruction`."""
    nll_value = reconstruction_nll(
        outputs, batch, modality=modality, likelihood=likelihood, sigma=sigma, loss="reconstruction"
    )
    return nll_value, {"reconstruction": nll_value}


@LOSSES.register("neg_elbo")
@requires(_needs("z_mean", "z_logvar"))
def neg_elbo(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    beta: float = 1.0,
    warmup_steps: int = 0,
    modality: str = "image",
    likelihood: str = "bernoulli",
    sigma: float = 1.0,
) -> tuple[jax.Array, Metrics]:
    """Per-example reconstruction NLL + w * KL(q(z|x) || N(0, I)) (beta-VAE), (B,).

    w = `kl_weight(ctx.step, beta, warmup_steps)`: rises linearly from 0 to beta over
    the first `warmup_steps` steps (KL warm-up), beta throughout when 0. Needs `z_mean`,
    `z_logvar` and `recon/<modality>` (decoded from the sampled z when the model ran
    with train=True; from z = z_mean in evaluation). Metrics: `reconstruction`, `kl`,
    `kl_weight` (with a warm-up), and `neg_elbo` = reconstruction + kl, the unweighted bound (equal to
    the loss when w = 1, comparable across beta and steps otherwise).
    """
    if warmup_steps < 0:
        raise ConfigError(f"loss 'neg_elbo' has warmup_steps={warmup_steps}; valid: >= 0")
    recon = reconstruction_nll(
        outputs, batch, modality=modality, likelihood=likelihood, sigma=sigma, loss="neg_elbo"
    )
    kl = gaussian_kl(
        require_output(outputs, "z_mean", "neg_elbo"),
        require_output(outputs, "z_logvar", "neg_elbo"),
    )
    weight = kl_weight(ctx.step, beta, warmup_steps)
    metrics = {"neg_elbo": recon + kl, "reconstruction": recon, "kl": kl}
    if warmup_steps:
        metrics["kl_weight"] = weight
    return recon + weight * kl, metrics


def iwae_log_weights(
    apply_fn: Callable[..., Mapping[str, jax.Array]],
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    *,
    num_samples: int,
    modality: str,
    likelihood: str,
    scale: float = 1.0,
    train: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    """Importance log-weights (K, B): log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x).

    `apply_fn(batch, *, train, rngs) -> outputs` is a Gaussian-posterior model with params
    bound (e.g. `LossContext.apply_fn`); it must output `z`, `z_mean`, `z_logvar` and
    `recon/<modality>`, drawing z from the 'sample' rng. It is vmapped over K = num_samples
    keys split from `rng`; the encoder does not depend on the key, so vmap leaves it
    unbatched and computes it once, only the sampling and decoder run per sample.
    chunk_size < K evaluates the samples in chunks of that many (`jax.lax.map`) to bound
    memory. x is `target/<modality>` when the model outputs it, else `batch[modality]`.
    """

    def one_sample(key: jax.Array) -> jax.Array:
        sample, dropout = jax.random.split(key)
        outputs = apply_fn(batch, train=train, rngs={"sample": sample, "dropout": dropout})
        z = require_output(outputs, "z", "iwae")
        z_mean = require_output(outputs, "z_mean", "iwae")
        z_logvar = require_output(outputs, "z_logvar", "iwae")
        log_px = -reconstruction_nll(
            outputs, batch, modality=modality, likelihood=likelihood, sigma=scale, loss="iwae"
        )
        zeros = jnp.zeros_like(z)
        log_pz = gaussian_log_density(z, zeros, zeros)
        return log_px + log_pz - gaussian_log_density(z, z_mean, z_logvar)

    if num_samples < 1:
        raise ConfigError(f"iwae has num_samples={num_samples}; valid: an int >= 1")
    keys = jax.random.split(rng, num_samples)
    if chunk_size is None or chunk_size >= num_samples:
        return jax.vmap(one_sample)(keys)
    return jax.lax.map(one_sample, keys, batch_size=chunk_size)


def iwae_bound(log_weights: jax.Array) -> jax.Array:
    """The K-sample importance-weighted bound on log p(x): (K, B) -> (B,),
    logsumexp_k(log w_k) - log K. With K = 1 it is the (single-sample) ELBO; it never
    decreases in expectation as K grows and tends to log p(x) (Burda et al., 2016)."""
    return jax.nn.logsumexp(log_weights, axis=0) - math.log(log_weights.shape[0])


@LOSSES.register("iwae")
@requires(_needs("z", "z_mean", "z_logvar"))
def iwae(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    num_samples: int = 5,
    modality: str = "image",
    likelihood: str = "bernoulli",
    scale: float = 1.0,
) -> tuple[jax.Array, Metrics]:
    """-(IWAE bound with K = num_samples) per example, in nats, (B,); metric `iwae`.

    Trains a Gaussian VAE on the importance-weighted bound: K extra forward passes
    through `ctx.apply_fn` (train=True, 'sample' keys from `ctx.rng`); `outputs` is not
    used. K = 1 is the ELBO, i.e. `neg_elbo` with beta = 1.
    """
    if ctx.apply_fn is None:
        raise ConfigError("loss 'iwae' needs ctx.apply_fn (the trainer provides it)")
    log_weights = iwae_log_weights(
        ctx.apply_fn,
        batch,
        ctx.rng,
        num_samples=num_samples,
        modality=modality,
        likelihood=likelihood,
        scale=scale,
        train=True,
    )
    value = -iwae_bound(log_weights)
    return value, {"iwae": value}
