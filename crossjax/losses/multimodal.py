"""Objectives of the multimodal VAEs in `crossjax.models.multimodal_vae`.

- "mvae" (Wu & Goodman 2018): the ELBO of the joint PoE posterior of the present
  modalities + each present modality's unimodal ELBO + `num_subsets` ELBOs of random
  subsets of the present modalities (each reconstructs only its own modalities).
- "mmvae" (Shi et al. 2019): stratified mixture-of-experts bound: K samples from each
  present expert, every present modality reconstructed from each, log q(z|X) the
  mixture density; `objective` "elbo", "iwae" or "dreg" (doubly reparameterised IWAE
  gradients, Tucker et al. 2018, "Doubly Reparameterized Gradient Estimators for Monte
  Carlo Objectives", with a correction for the mixture that the MMVAE code lacks).
- "mopoe" (Sutter et al. 2021): mixture over the subsets of the present modalities,
  each subset's PoE sample reconstructing every present modality, plus its KL.

- "latent_alignment" (an extra term for any of the three, in the spirit of the
  contrastive multimodal VAEs of Shi et al. 2021, "Relating by Contrasting"): InfoNCE
  between the unimodal posteriors of each pair of modalities, so that each modality
  alone lands where the others put the same example.

Missing modalities (`present/<m>` False) are excluded from every term. Keyword
arguments shared by all three: `likelihoods` (per modality, default
`decoders.DEFAULT_LIKELIHOOD`; must match the model's), `scales` (per modality, the
gaussian std / laplace b, default 1.0) and `weights` (per modality, multiplies its
log-likelihood in the objective, default 1.0: rescale modalities of very different
sizes so each one shapes the latent). Every loss returns per-example values (B,); metrics, also per example:
`recon/<m>` (NLL in nats, 0 where m is absent), `kl`, and `neg_elbo`, the model's own
bound on -log p(present modalities) with unit weights and beta 1, comparable across the
three models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from crossjax.errors import ConfigError
from crossjax.gaussian import gaussian_log_density
from crossjax.losses.base import LOSSES, LossContext, Metrics, batch_level, require_output
from crossjax.losses.generative import check_likelihood, gaussian_kl, nll
from crossjax.models.decoders import DEFAULT_LIKELIHOOD
from crossjax.models.multimodal_vae import (
    mixture_log_density,
    subset_membership,
)

OBJECTIVES = ("elbo", "iwae", "dreg")


def _modalities(outputs: Mapping[str, jax.Array], loss: str) -> list[str]:
    modalities = sorted(k.removeprefix("present/") for k in outputs if k.startswith("present/"))
    if not modalities:
        raise ConfigError(f"loss {loss!r} needs a multimodal_vae model (outputs present/<m>)")
    return modalities


def _per_modality(value: Any, default: Any, modalities: list[str], field: str, loss: str) -> dict:
    """A per-modality kwarg (dict or None) filled with `default`; ConfigError for other keys."""
    value = value or {}
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping) or set(value) - set(modalities):
        raise ConfigError(
            f"loss {loss!r} has {field}={value!r}; valid: a dict keyed by {', '.join(modalities)}"
        )
    return {m: value.get(m, default(m) if callable(default) else default) for m in modalities}


class _Scorer:
    """Per-modality NLLs of stacked reconstructions (B, N, *decoded) -> (B, N)."""

    def __init__(self, outputs, likelihoods, scales, weights, loss: str):
        self.modalities = _modalities(outputs, loss)
        self.likelihoods = _per_modality(
            likelihoods, DEFAULT_LIKELIHOOD.get, self.modalities, "likelihoods", loss
        )
        self.scales = _per_modality(scales, 1.0, self.modalities, "scales", loss)
        self.weights = _per_modality(weights, 1.0, self.modalities, "weights", loss)
        for m in self.modalities:
            check_likelihood(self.likelihoods[m], f"loss {loss!r} ({m})")
            if not self.scales[m] > 0 or not self.weights[m] >= 0:
                raise ConfigError(
                    f"loss {loss!r}: {m} has scale {self.scales[m]} and weight "
                    f"{self.weights[m]}; valid: scale > 0, weight >= 0"
                )
        self.outputs = outputs
        self.loss = loss
        self.present = {
            m: require_output(outputs, f"present/{m}", loss).astype(jnp.float32)
            for m in self.modalities
        }

    def nll(self, modality: str, key: str) -> jax.Array:
        """NLL of `target/<modality>` under outputs[key] (B, N, *decoded): (B, N)."""
        recon = require_output(self.outputs, key, self.loss)
        target = require_output(self.outputs, f"target/{modality}", self.loss)
        batch, n = recon.shape[:2]
        target = jnp.broadcast_to(target[:, None], (batch, n, *target.shape[1:]))
        flat = nll(
            self.likelihoods[modality],
            recon.reshape(batch * n, *recon.shape[2:]),
            target.reshape(batch * n, *target.shape[2:]),
            scale=self.scales[modality],
        )
        return flat.reshape(batch, n)


def _beta(beta: float, warmup_steps: int, step: jax.Array) -> jax.Array:
    """beta, ramped linearly from 0 over the first `warmup_steps` steps (KL warm-up)."""
    if warmup_steps <= 0:
        return jnp.asarray(beta, jnp.float32)
    return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def _subset_terms(scorer: _Scorer, loss: str) -> tuple[jax.Array, dict, dict, jax.Array]:
    """Per subset (B, S): KL(q_subset || N(0, I)), the NLL of each modality {m: (B, S)}
    and which modalities it encodes {m: (B, S) bool}; and subset/valid (B, S)."""
    outputs = scorer.outputs
    kl = gaussian_kl(
        require_output(outputs, "subset/mean", loss), require_output(outputs, "subset/logvar", loss)
    )
    uses = {m: require_output(outputs, f"subset/uses/{m}", loss) for m in scorer.modalities}
    nlls = {m: scorer.nll(m, f"subset/recon/{m}") for m in scorer.modalities}
    valid = require_output(outputs, "subset/valid", loss).astype(jnp.float32)
    if valid.shape[1] != 2 ** len(scorer.modalities) - 1:
        raise ValueError(f"loss {loss!r}: {valid.shape[1]} subsets for {scorer.modalities}")
    return kl, nlls, uses, valid


@LOSSES.register("mvae")
def mvae(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    beta: float = 1.0,
    warmup_steps: int = 0,
    num_subsets: int = 1,
    likelihoods: Mapping[str, str] | None = None,
    scales: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[jax.Array, Metrics]:
    """MVAE objective (Wu & Goodman 2018) for a "poe" model; see the module docstring.

    -ELBO(X_present) - sum_m ELBO(x_m) - sum over `num_subsets` subsets drawn (with
    ctx.rng, uniformly per example) among those of 2..M-1 present modalities, each
    ELBO with beta * KL, beta warmed up linearly over `warmup_steps`.
    """
    scorer = _Scorer(outputs, likelihoods, scales, weights, "mvae")
    if isinstance(num_subsets, bool) or not isinstance(num_subsets, int) or num_subsets < 0:
        raise ConfigError(f"loss 'mvae' has num_subsets={num_subsets!r}; valid: an int >= 0")
    kl, nlls, uses, valid = _subset_terms(scorer, "mvae")
    sizes = jnp.asarray(subset_membership(len(scorer.modalities)).sum(axis=1))
    recon = sum(scorer.weights[m] * jnp.where(uses[m], nlls[m], 0.0) for m in scorer.modalities)
    num_modalities = len(scorer.modalities)
    # How often each subset's ELBO counts: the joint (the last subset, i.e. the PoE of
    # whatever is present), the present singletons, and the random subsets.
    joint = jnp.any(jnp.stack(list(scorer.present.values())) > 0, axis=0)
    counts = valid * (sizes == 1)
    counts = counts.at[:, -1].add(joint.astype(jnp.float32))
    middle = valid * ((sizes > 1) & (sizes < num_modalities))
    if num_subsets and num_modalities > 2:
        logits = jnp.where(middle > 0, 0.0, -jnp.inf)
        logits = jnp.where(jnp.any(middle > 0, -1, keepdims=True), logits, 0.0)
        picks = jax.random.categorical(ctx.rng, logits, shape=(num_subsets, *logits.shape[:1]))
        counts = counts + middle * jnp.sum(jax.nn.one_hot(picks, sizes.shape[0]), axis=0)
    beta_t = _beta(beta, warmup_steps, ctx.step)
    loss = jnp.sum(counts * (recon + beta_t * kl), axis=-1)
    joint_nll = {m: scorer.present[m] * nlls[m][:, -1] for m in scorer.modalities}
    metrics = {f"recon/{m}": v for m, v in joint_nll.items()}
    metrics["kl"] = kl[:, -1]
    metrics["neg_elbo"] = sum(joint_nll.values()) + kl[:, -1]
    return loss, metrics


@LOSSES.register("mopoe")
def mopoe(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    beta: float = 1.0,
    warmup_steps: int = 0,
    likelihoods: Mapping[str, str] | None = None,
    scales: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[jax.Array, Metrics]:
    """MoPoE objective (Sutter et al. 2021) for a "mopoe" model; see the module docstring.

    The mean over the subsets of the present modalities (the non-empty ones: 2^P - 1 of
    them for P present) of [NLL of every present modality from the subset's z + beta *
    KL(q_subset || N(0, I))]; beta warmed up linearly over `warmup_steps`.
    """
    scorer = _Scorer(outputs, likelihoods, scales, weights, "mopoe")
    kl, nlls, _, valid = _subset_terms(scorer, "mopoe")
    share = valid / jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True), 1.0)  # (B, S)
    mixed = {m: scorer.present[m] * jnp.sum(share * nlls[m], -1) for m in scorer.modalities}
    kl = jnp.sum(share * kl, axis=-1)
    recon = sum(scorer.weights[m] * v for m, v in mixed.items())
    loss = recon + _beta(beta, warmup_steps, ctx.step) * kl
    metrics = {f"recon/{m}": v for m, v in mixed.items()}
    metrics["kl"] = kl
    metrics["neg_elbo"] = sum(mixed.values()) + kl
    return loss, metrics


@LOSSES.register("mmvae")
def mmvae(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    objective: str = "elbo",
    likelihoods: Mapping[str, str] | None = None,
    scales: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[jax.Array, Metrics]:
    """MMVAE objective (Shi et al. 2019) for a "moe" model; see the module docstring.

    With log w_{e,k} = log p(z) + sum_m weight_m log p(x_m | z) - log q(z | X) for the
    k-th sample z of present expert e, the mean over present experts of
    "elbo": mean_k log w; "iwae": log mean_k exp(log w); "dreg": the IWAE value with
    DReG gradients, w~ the normalised weights (stop-gradient): the encoders see
    sum_k w~_k^2 d log w_k / dz dz/dphi (log q with stop-gradient parameters) +
    sum_k w~_k d/dphi [log q_e(z_k) - log q(z_k | X)] at fixed z_k, the decoders
    sum_k w~_k grad log w_k. The second encoder term, zero for one expert, is missing
    from the MMVAE code's DReG, which is therefore biased for K > 1 with several
    experts (tests/test_multimodal_vae.py); with it the estimate is unbiased for the
    IWAE gradient. "dreg" needs a model built with `dreg=True`.
    Extra metric: `neg_iwae`, -log mean_k exp(log w) with unit weights.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(
            f"loss 'mmvae' has objective={objective!r}; valid: {', '.join(OBJECTIVES)}"
        )
    scorer = _Scorer(outputs, likelihoods, scales, weights, "mmvae")
    experts = scorer.modalities
    if objective == "dreg" and f"expert/{experts[0]}/recon_detached/{experts[0]}" not in outputs:
        raise ConfigError("loss 'mmvae' with objective='dreg' needs the model built with dreg=True")

    def stack(fmt: str, axis: int = -2) -> jax.Array:  # per-expert outputs, stacked
        return jnp.stack([require_output(outputs, fmt.format(e), "mmvae") for e in experts], axis)

    params = {"mean": stack("expert/{}/mean"), "logvar": stack("expert/{}/logvar")}  # (B, E, Z)
    present = jnp.stack([scorer.present[e] for e in experts], -1)  # (B, E)
    z = stack("expert/{}/z", 2)  # (B, K, E, Z)
    batch_size, k, num_experts, _ = z.shape

    def log_weights(z, params, recon_key: str) -> dict[str, Any]:
        """Per sample (B, K, E): `log_w` (weighted), `log_w_unit` (unit weights), `kl`
        (log q(z|X) - log p(z)), and `nll` per modality (0 where absent)."""
        nlls = {
            m: scorer.present[m][:, None, None]
            * jnp.stack([scorer.nll(m, recon_key.format(e, m)) for e in experts], -1)
            for m in experts
        }
        flat = z.reshape(batch_size, k * num_experts, -1)
        log_q = mixture_log_density(flat, params["mean"], params["logvar"], present)
        kl = log_q.reshape(z.shape[:-1]) - gaussian_log_density(z, 0.0, 0.0)
        weighted = sum(scorer.weights[m] * v for m, v in nlls.items())
        return {
            "log_w": -weighted - kl,
            "log_w_unit": -sum(nlls.values()) - kl,
            "kl": kl,
            "nll": nlls,
        }

    terms = log_weights(z, params, "expert/{}/recon/{}")
    share = present / jnp.maximum(jnp.sum(present, -1, keepdims=True), 1.0)  # (B, E)

    def over_samples(per_sample: jax.Array) -> jax.Array:  # (B, K, E) -> (B,)
        return jnp.sum(share * jnp.mean(per_sample, axis=1), axis=-1)

    def iwae(log_w: jax.Array) -> jax.Array:  # (B, K, E) -> (B,)
        return jnp.sum(share * (jax.nn.logsumexp(log_w, axis=1) - math.log(k)), axis=-1)

    if objective == "elbo":
        loss = -over_samples(terms["log_w"])
    else:
        loss = -iwae(terms["log_w"])
    if objective == "dreg":
        frozen = jax.lax.stop_gradient(params)
        fixed = jax.lax.stop_gradient(z)
        path = log_weights(z, frozen, "expert/{}/recon/{}")["log_w"]
        decoder_only = log_weights(fixed, frozen, "expert/{}/recon_detached/{}")["log_w"]
        normalised = jax.lax.stop_gradient(jax.nn.softmax(path, axis=1))
        # With several experts log w also depends on the parameters through
        # log q_e(z) - log q(z|X) at a fixed z (q_e: the expert that drew z); that part
        # is not a score of the sampling distribution and keeps its IWAE weight w~.
        own = gaussian_log_density(fixed, params["mean"][:, None], params["logvar"][:, None])
        mixture = mixture_log_density(
            fixed.reshape(batch_size, k * num_experts, -1),
            params["mean"],
            params["logvar"],
            present,
        ).reshape(own.shape)
        per_sample = (
            normalised**2 * path
            + (normalised - normalised**2) * decoder_only
            + normalised * (own - mixture)
        )
        surrogate = over_samples(k * per_sample)
        loss = jax.lax.stop_gradient(loss) - (surrogate - jax.lax.stop_gradient(surrogate))
    metrics = {f"recon/{m}": over_samples(v) for m, v in terms["nll"].items()}
    metrics["kl"] = over_samples(terms["kl"])
    metrics["neg_elbo"] = -over_samples(terms["log_w_unit"])
    metrics["neg_iwae"] = -iwae(terms["log_w_unit"])
    return loss, metrics


def _masked_info_nce(logits: jax.Array, valid: jax.Array) -> jax.Array:
    """Symmetric InfoNCE of (B, B) logits (row i matches column i) over the examples
    where `valid` (B,) holds: the others are neither anchors nor negatives, and get 0.
    (B,) per-example values."""
    both = valid[None, :] & valid[:, None]
    # A large finite negative, not -inf: a row with no valid entry stays finite, so its
    # (masked-out) gradient is 0 rather than NaN.
    masked = jnp.where(both, logits, -1e9)
    diagonal = jnp.diagonal(logits)
    rows = jax.nn.logsumexp(masked, axis=1) - diagonal
    cols = jax.nn.logsumexp(masked, axis=0) - diagonal
    return jnp.where(valid, 0.5 * (rows + cols), 0.0)


@LOSSES.register("latent_alignment")
@batch_level
def latent_alignment(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    temperature: float = 1.0,
    pairs: Any = None,
) -> tuple[jax.Array, Metrics]:
    """Contrastive alignment of the unimodal posteriors `unimodal/<m>/mean` (B, Z).

    For each pair (a, b): symmetric InfoNCE whose logit for examples (i, j) is
    -||mean_a(i) - mean_b(j)||^2 / `temperature`, over the examples with both present.
    It pulls the z that modality a alone gives an example onto the z that b gives it,
    and away from the z of the other examples, so decoding any modality from a (cross-
    modal generation) sees the latents the decoders learnt from b. `pairs`: e.g.
    ("audio-image", "audio-text"); None: every pair of the model's modalities.
    Rows outside `ctx.mask` (padding) take no part. Metrics: `align/<a>-<b>` per pair
    (0 for an example that lacks a or b); the loss of an example is their mean.
    """
    del batch
    modalities = _modalities(outputs, "latent_alignment")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ConfigError(
            f"loss 'latent_alignment' has temperature={temperature!r}; valid: a number > 0"
        )
    if pairs is None:
        chosen = [(a, b) for i, a in enumerate(modalities) for b in modalities[i + 1 :]]
    else:
        names = (pairs,) if isinstance(pairs, str) else tuple(pairs)
        chosen = [tuple(str(p).split("-")) for p in names]
        if not chosen or any(
            len(p) != 2 or p[0] == p[1] or not set(p) <= set(modalities) for p in chosen
        ):
            raise ConfigError(
                f"loss 'latent_alignment' has pairs={pairs!r}; valid: names 'a-b' of two "
                f"different modalities among {', '.join(modalities)}"
            )
    if not chosen:
        raise ConfigError("loss 'latent_alignment' needs a model of at least two modalities")
    used = {m for pair in chosen for m in pair}
    means = {m: require_output(outputs, f"unimodal/{m}/mean", "latent_alignment") for m in used}
    present = {m: outputs[f"present/{m}"].astype(bool) for m in used}
    rows = next(iter(means.values())).shape[0]
    real = ctx.mask if ctx.mask is not None else jnp.ones((rows,), bool)
    metrics = {}
    for a, b in chosen:
        distance = jnp.sum(jnp.square(means[a][:, None, :] - means[b][None, :, :]), axis=-1)
        valid = present[a] & present[b] & real
        metrics[f"align/{a}-{b}"] = _masked_info_nce(-distance / temperature, valid)
    return sum(metrics.values()) / len(metrics), metrics
