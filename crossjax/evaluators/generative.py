"""Evaluators of generative models: likelihood bounds tighter than the ELBO."""

from __future__ import annotations

import jax
import numpy as np

from crossjax.errors import ConfigError
from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.losses.generative import check_likelihood, iwae_bound, iwae_log_weights
from crossjax.requirements import Requires, requires
from crossjax.sharding import to_host


def _iwae_requirements(kwargs: dict) -> Requires:
    modality = kwargs.get("modality", "image")
    return Requires(batch=(modality,), outputs=("z", "z_mean", "z_logvar", f"recon/{modality}"))


@EVALUATORS.register("iwae_nll")
@requires(_iwae_requirements)
def iwae_nll(
    ctx: EvalContext,
    *,
    num_samples: int = 64,
    modality: str = "image",
    likelihood: str = "bernoulli",
    scale: float = 1.0,
    chunk_size: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """`iwae_nll`: mean over the eval split of -(IWAE bound with K = num_samples), nats.

    An upper bound on -log p(x) that tightens as K grows; with K = 1 it is the sampled
    negative ELBO (the `neg_elbo` loss metric in expectation), so for K > 1 it is lower
    than `neg_elbo` in expectation (Jensen). Needs a Gaussian-posterior model (outputs
    `z`, `z_mean`, `z_logvar`, `recon/<modality>`); `likelihood` and `scale` must match
    the training loss. Jitted once per call; chunk_size < K bounds memory by evaluating
    the K samples in chunks. Sample keys come from `seed`, folded with the batch index.
    """
    check_likelihood(likelihood, "evaluator 'iwae_nll'")
    if ctx.model is None:
        raise ConfigError("evaluator 'iwae_nll' needs the model (EvalContext.model)")

    @jax.jit
    def negative_bound(variables, batch, key):
        def apply_fn(b, *, train, rngs):
            return ctx.model.apply(variables, b, train=train, rngs=rngs)

        log_weights = iwae_log_weights(
            apply_fn,
            batch,
            key,
            num_samples=num_samples,
            modality=modality,
            likelihood=likelihood,
            scale=scale,
            chunk_size=chunk_size,
        )
        return -iwae_bound(log_weights)

    total, count = 0.0, 0
    for index, (batch, valid) in enumerate(ctx.batches()):
        key = jax.random.fold_in(jax.random.key(seed), index)
        values = to_host(negative_bound(ctx.variables(), batch, key))
        total += float(np.sum(values[valid], dtype=np.float64))
        count += int(valid.sum())
    return {"iwae_nll": total / max(count, 1)}
