"""python scripts/train.py --config configs/digits_vae_iwae.py --workdir runs/digits_vae_iwae

The `digits_vae` Gaussian VAE of the `crossjax_digits` images (Bernoulli likelihood),
evaluated with both bounds on the test split: `neg_elbo` (single-sample ELBO, the loss
metric) and `iwae_nll` (-IWAE bound with K = 64 importance samples, evaluator
`iwae_nll`), which is tighter, so lower, by Jensen. Tiny: `--config
configs/digits_vae_iwae.py:tiny`.
"""

import ml_collections

from configs import digits_vae

IWAE_SAMPLES = 64


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = digits_vae.get_config(variant)
    likelihood = config.model.likelihood
    config.evaluators = (
        *config.evaluators,
        (
            "iwae_nll",
            {"num_samples": IWAE_SAMPLES, "modality": "image", "likelihood": likelihood},
        ),
    )
    return config
