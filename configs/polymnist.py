"""python scripts/train.py --config configs/polymnist.py --workdir runs/polymnist

PolyMNIST (`crossjax_polymnist`: 5 views of each digit class, each a different MNIST
instance on its own procedural background, generated once from mnist in the same
data_dir, which needs TensorFlow to prepare mnist). Batches carry every view: `image`
= m0 and `image_m1`..`image_m4` (B, 28, 28, 3), for multimodal VAEs and your own losses;
this config trains the fusion classifier on view m0.
Tiny (first 300 digits, 3 views): `--config configs/polymnist.py:tiny`.
"""

from configs.common import is_tiny, shrink_to_tiny, tiny_catalog
from configs.mnist import catalog_classifier

NUM_VIEWS = 5


def get_config(variant: str | None = None):
    views = NUM_VIEWS if variant != "tiny" else 3  # the builder's tiny config has 3
    modalities = ("image", *(f"image_m{v}" for v in range(1, views)))
    config = catalog_classifier("crossjax_polymnist", modalities, None)
    config.model.modalities = ("image",)
    if is_tiny(variant):
        shrink_to_tiny(config)  # -> crossjax_polymnist/tiny
        tiny_catalog(config, "train", "test")
    return config
