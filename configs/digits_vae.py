"""python scripts/train.py --config configs/digits_vae.py --workdir runs/digits_vae

Gaussian VAE of the `crossjax_digits` images (8x8 grey, Bernoulli likelihood). Reports
test `neg_elbo` with its `reconstruction` and `kl` terms and writes a grid of test images
over their reconstructions to WORKDIR/images/. Tiny: `--config configs/digits_vae.py:tiny`.
The `iwae` flag (`:iwae`, `:iwae_tiny`) also reports `iwae_nll`, the -IWAE bound with
K = 64 importance samples, which is tighter, so lower, than `neg_elbo` by Jensen.
"""

import ml_collections

from configs.common import (
    best_checkpoint,
    embedded_data,
    optimizer,
    run_length,
    shrink_to_tiny,
)
from crossjax.config import base_config, variant_flags

IWAE_SAMPLES = 64


def use_image_vae(
    config: ml_collections.ConfigDict, *, hidden: tuple[int, ...], latent_dim: int
) -> None:
    """Makes `config` train a Gaussian VAE of `image` with a Bernoulli likelihood: model,
    negative ELBO loss, the reconstruction-grid evaluator, best checkpoint by neg_elbo."""
    likelihood = "bernoulli"  # the decoder outputs logits; the loss and the pictures agree
    config.model = ml_collections.ConfigDict(
        {
            "name": "vae",
            "modality": "image",
            "hidden": hidden,
            "latent_dim": latent_dim,
            "likelihood": likelihood,
            "dtype": "float32",
        }
    )
    config.losses = (
        ("neg_elbo", 1.0, {"modality": "image", "likelihood": likelihood, "beta": 1.0}),
    )
    config.evaluators = (("reconstruction_images", {"modality": "image"}),)
    best_checkpoint(config, "neg_elbo", "min")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    flags = variant_flags(variant, ("tiny", "iwae"))
    config = base_config()
    run_length(config, steps=2000, batch_size=128, eval_every=500)
    embedded_data(config, ("image",))
    use_image_vae(config, hidden=(256,), latent_dim=16)
    optimizer(config, 1e-3)
    if "iwae" in flags:
        likelihood = config.model.likelihood
        iwae = {"num_samples": IWAE_SAMPLES, "modality": "image", "likelihood": likelihood}
        config.evaluators = (*config.evaluators, ("iwae_nll", iwae))
    if "tiny" in flags:
        shrink_to_tiny(config)
    return config
