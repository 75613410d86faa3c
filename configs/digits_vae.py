"""python scripts/train.py --config configs/digits_vae.py --workdir runs/digits_vae

Gaussian VAE of the `crossjax_digits` images (8x8 grey, Bernoulli likelihood). Reports
test `neg_elbo` with its `reconstruction` and `kl` terms and writes a grid of test images
over their reconstructions to WORKDIR/images/. Tiny: `--config configs/digits_vae.py:tiny`.
"""

import ml_collections

from configs.digits_fusion import shrink_to_tiny
from crossjax.config import base_config


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
    config.best_metric = "neg_elbo"
    config.best_mode = "min"


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.num_train_steps = 2000
    config.batch_size = 128
    config.log_every = 100
    config.eval_every = 500
    config.checkpoint_every = 500
    config.data.name = "crossjax_digits"
    config.data.modalities = ("image",)
    use_image_vae(config, hidden=(256,), latent_dim=16)
    config.optimizer.learning_rate = 1e-3
    if variant == "tiny":
        shrink_to_tiny(config)
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; valid: tiny")
    return config
