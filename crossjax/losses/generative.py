"""Likelihood and KL terms for autoencoders and VAEs.

Reconstruction reads the model's `recon/<modality>` (same shape as the input) as
  - `likelihood="bernoulli"`: logits of independent Bernoullis per value. The target is
    the input in [0, 1]; for non-binary inputs (grey pixels) this is the usual
    "continuous targets in BCE" objective, not a normalised density.
  - `likelihood="gaussian"`: the mean of N(recon, sigma^2 I) with a FIXED `sigma`
    (kwarg, default 1.0), with full normalising constants, so the value is a true
    negative log-density in nats.
Per-example values are summed over all non-batch dims; the loss is the batch mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from crossjax.errors import ConfigError
from crossjax.losses import LOSSES, LossContext, Metrics, require_output

LIKELIHOODS = ("bernoulli", "gaussian")


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
    nll = optax.sigmoid_binary_cross_entropy(
        logits.astype(jnp.float32), targets.astype(jnp.float32)
    )
    return _sum_per_example(nll)


def gaussian_nll(mean: jax.Array, targets: jax.Array, sigma: float = 1.0) -> jax.Array:
    """-log N(targets | mean, sigma^2 I) summed per example: (B, ...) -> (B,)."""
    z = (targets.astype(jnp.float32) - mean.astype(jnp.float32)) / sigma
    nll = 0.5 * jnp.square(z) + math.log(sigma) + 0.5 * math.log(2.0 * math.pi)
    return _sum_per_example(nll)


def reconstruction_nll(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    *,
    modality: str,
    likelihood: str,
    sigma: float,
    loss: str,
) -> jax.Array:
    """Per-example NLL (B,) of `batch[modality]` under `outputs["recon/<modality>"]`."""
    if likelihood not in LIKELIHOODS:
        raise ConfigError(
            f"loss {loss!r} has likelihood={likelihood!r}; valid: {', '.join(LIKELIHOODS)}"
        )
    if not sigma > 0:
        raise ConfigError(f"loss {loss!r} has sigma={sigma}; valid: sigma > 0")
    recon = require_output(outputs, f"recon/{modality}", loss)
    targets = batch[modality]
    if recon.shape != targets.shape:
        raise ValueError(
            f"loss {loss!r}: recon/{modality} has shape {recon.shape}, input {targets.shape}"
        )
    if likelihood == "bernoulli":
        return bernoulli_nll(recon, targets)
    return gaussian_nll(recon, targets, sigma)


@LOSSES.register("reconstruction")
def reconstruction(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    modality: str = "image",
    likelihood: str = "bernoulli",
    sigma: float = 1.0,
) -> tuple[jax.Array, Metrics]:
    """Batch mean of the per-example reconstruction NLL (nats); metric `reconstruction`."""
    nll = jnp.mean(
        reconstruction_nll(
            outputs,
            batch,
            modality=modality,
            likelihood=likelihood,
            sigma=sigma,
            loss="reconstruction",
        )
    )
    return nll, {"reconstruction": nll}


@LOSSES.register("neg_elbo")
def neg_elbo(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    beta: float = 1.0,
    modality: str = "image",
    likelihood: str = "bernoulli",
    sigma: float = 1.0,
) -> tuple[jax.Array, Metrics]:
    """Batch mean of reconstruction NLL + beta * KL(q(z|x) || N(0, I)) (beta-VAE).

    Needs `z_mean`, `z_logvar` and `recon/<modality>` (decoded from the sampled z when
    the model ran with train=True; from z = z_mean in evaluation). Metrics:
    `reconstruction`, `kl`, and `neg_elbo` = reconstruction + kl, the unweighted bound
    (equal to the loss when beta = 1, comparable across beta otherwise).
    """
    recon = reconstruction_nll(
        outputs, batch, modality=modality, likelihood=likelihood, sigma=sigma, loss="neg_elbo"
    )
    kl = gaussian_kl(
        require_output(outputs, "z_mean", "neg_elbo"),
        require_output(outputs, "z_logvar", "neg_elbo"),
    )
    recon, kl = jnp.mean(recon), jnp.mean(kl)
    loss = recon + beta * kl
    return loss, {"neg_elbo": recon + kl, "reconstruction": recon, "kl": kl}
