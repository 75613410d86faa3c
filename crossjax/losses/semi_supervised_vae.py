"""The M2 objective (Kingma et al. 2014) on the outputs of `crossjax.models.semi_supervised_vae.M2`.

For one example, with a uniform prior p(y) = 1/K and -ELBO(x, y) =
-log p(x|y,z) + KL(q(z|x,y) || N(0, I)) + log K:

  labelled (present/label):  L(x, y) = -ELBO(x, y) + alpha * CE(q(y|x), y)
  unlabelled:                U(x)    = sum_y q(y|x) (-ELBO(x, y)) - H(q(y|x))

U enumerates the K classes (the model decodes every class at once). The loss reads
`present/label` itself instead of being masked by it: the unlabelled rows feed U. A
batch without `present/label` is fully labelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from crossjax.losses.base import LOSSES, LossContext, Metrics, require_output
from crossjax.losses.generative import gaussian_kl, nll, reconstruction_target
from crossjax.models.decoders import check_likelihood
from crossjax.requirements import Requires, requires


def m2_neg_elbo_per_class(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    *,
    modality: str,
    likelihood: str,
    sigma: float,
) -> jax.Array:
    """-ELBO(x, y) for every class y, (B, K): the reconstruction NLL of the target under
    `m2/recon/<modality>` (B, K, ...) + KL of `m2/z_mean`/`m2/z_logvar` (B, K, Z) + log K."""
    check_likelihood(likelihood, "loss 'm2'")
    recon = require_output(outputs, f"m2/recon/{modality}", "m2")
    size, k = recon.shape[:2]
    target = reconstruction_target(outputs, batch, modality)
    targets = jnp.broadcast_to(target[:, None], recon.shape)
    flat = (size * k, *recon.shape[2:])
    recon_nll = nll(likelihood, recon.reshape(flat), targets.reshape(flat), scale=sigma)
    kl = gaussian_kl(
        require_output(outputs, "m2/z_mean", "m2"), require_output(outputs, "m2/z_logvar", "m2")
    )
    return recon_nll.reshape(size, k) + kl + math.log(k)


@LOSSES.register("m2")
@requires(
    lambda kw: Requires(
        batch=("label",),
        outputs=("logits", "m2/z_mean", "m2/z_logvar", f"m2/recon/{kw.get('modality', 'image')}"),
    )
)
def m2(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    alpha: float = 1.0,
    modality: str = "image",
    likelihood: str = "bernoulli",
    sigma: float = 1.0,
) -> tuple[jax.Array, Metrics]:
    """Per-example M2 loss (B,): L(x, y) + alpha * CE on labelled rows, U(x) on the others.

    `alpha` weighs the classifier's cross-entropy on each labelled row (the paper's
    alpha = 0.1 N is for a sum over the data set; for a batch mix of l labelled and
    u unlabelled rows, 0.1 * num_labels * u / l gives the same balance). Metrics:
    `neg_elbo` (the bound without the alpha term: -ELBO(x, y) or U(x)) and `entropy`
    H(q(y|x)).
    """
    per_class = m2_neg_elbo_per_class(
        outputs, batch, modality=modality, likelihood=likelihood, sigma=sigma
    )
    log_q = jax.nn.log_softmax(require_output(outputs, "logits", "m2").astype(jnp.float32))
    q = jnp.exp(log_q)
    entropy = -jnp.sum(q * log_q, axis=-1)
    unlabelled = jnp.sum(q * per_class, axis=-1) - entropy
    present = batch.get("present/label")
    present = jnp.ones(per_class.shape[:1], bool) if present is None else present.astype(bool)
    label = jnp.where(present, batch["label"], 0).astype(jnp.int32)[:, None]
    labelled_elbo = jnp.take_along_axis(per_class, label, axis=-1)[:, 0]
    cross_entropy = -jnp.take_along_axis(log_q, label, axis=-1)[:, 0]
    bound = jnp.where(present, labelled_elbo, unlabelled)
    value = jnp.where(present, labelled_elbo + alpha * cross_entropy, unlabelled)
    return value, {"neg_elbo": bound, "entropy": entropy}
