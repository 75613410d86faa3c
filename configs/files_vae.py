"""python scripts/train.py --config configs/files_vae.py --workdir runs/my_vae \
    --config.data.source.path=/path/to/folder_with_idx_files

A Gaussian VAE of your images (MLP 400-20, Bernoulli likelihood on pixels in [0, 1], the
recipe of the pytorch/flax VAE examples): MNIST-format idx files by default, converted
once into the data_dir at their own size and grey mode; about 10 epochs of 60k images
(4,700 steps of 128). Reports test `neg_elbo` (`:iwae` adds `iwae_nll`, K = 64) and writes
reconstructions to WORKDIR/images/. An image folder instead:
`--config.data.source.format=image_folder` (images fitted to the first one's size and
colour; set `data.image_size` for folders of mixed sizes). Labels are not used.
Tiny (8 steps): `--config configs/files_vae.py:tiny`.
"""

import ml_collections

from configs.common import optimizer, run_length, tiny_catalog
from configs.digits_vae import IWAE_SAMPLES, use_image_vae
from crossjax.config import base_config, variant_flags


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    flags = variant_flags(variant, ("tiny", "iwae"))
    config = base_config()
    run_length(config, steps=4700, batch_size=128, eval_every=1000, checkpoint_every=1000)
    config.data.name = "files"
    config.data.modalities = ("image",)
    config.data.label_key = ""
    config.data.source.format = "idx"
    use_image_vae(config, hidden=(400,), latent_dim=20)
    optimizer(config, 1e-3)
    if "iwae" in flags:
        iwae = {"num_samples": IWAE_SAMPLES, "modality": "image", "likelihood": "bernoulli"}
        config.evaluators = (*config.evaluators, ("iwae_nll", iwae))
    if "tiny" in flags:
        tiny_catalog(config, "train", "test")
        config.model.hidden, config.model.latent_dim = (64,), 8
    return config
