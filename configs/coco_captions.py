"""python scripts/train.py --config configs/coco_captions.py --workdir runs/coco_captions

COCO 2014 captions from the TFDS catalog (`coco_captions`, Karpathy splits: 82k train /
5k test images of varying size, 5+ captions each, no label): a Gaussian VAE of the
images, resized (shorter side) and centre-cropped to 32x32 RGB, with Bernoulli
likelihood. The batches also carry the caption contract: `text` is one caption (a seeded
random one per example and epoch in training, the first in evaluation) and `captions`
(B, 5, L) all five, for retrieval evaluators and contrastive models. TFDS builds
coco_captions with TensorFlow, so reading it needs `pip install 'crossjax[tf]'` (or a
copy prepared elsewhere with file_format='array_record' in `--config.data.data_dir`).
Tiny: `--config configs/coco_captions.py:tiny`.

Also home of `image_vae_config`, the unlabelled-image VAE that configs/files_coco.py reuses.
"""

import ml_collections

from configs.common import is_tiny, optimizer, run_length, tiny_catalog
from configs.digits_vae import use_image_vae
from crossjax.config import base_config


def image_vae_config(name: str, variant: str | None, *, tiny_splits: tuple[str, str]):
    """A Gaussian VAE of `image` (32x32 RGB) plus the caption contract (5 captions)."""
    config = base_config()
    run_length(config, steps=5000, batch_size=128, eval_every=1000, checkpoint_every=1000)
    config.data.name = name
    config.data.modalities = ("image", "text")
    config.data.label_key = ""
    config.data.image_size = (32, 32)
    config.data.image_mode = "RGB"
    config.data.max_text_len = 24
    config.data.all_captions = 5
    use_image_vae(config, hidden=(512,), latent_dim=32)
    optimizer(config, 1e-3)
    if is_tiny(variant):
        tiny_catalog(config, *tiny_splits)
        config.model.hidden = (64,)
        config.model.latent_dim = 8
    return config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return image_vae_config("coco_captions", variant, tiny_splits=("train[:512]", "test[:256]"))
