"""python scripts/train.py --config configs/mnist_svhn.py --workdir runs/mnist_svhn

The MNIST-SVHN pairing (`crossjax_mnist_svhn`, as in MMVAE: each MNIST digit with 5 SVHN
digits of its label, generated once from the catalog datasets in the same data_dir, which
needs TensorFlow to prepare mnist and svhn_cropped). Batches carry both views: `image`
(B, 28, 28, 1) = MNIST and `image_svhn` (B, 32, 32, 3) = SVHN, for your own multimodal
models and losses; this config trains the fusion classifier on the MNIST view.
Tiny (pairing of the first 300 digits, 2 partners): `--config configs/mnist_svhn.py:tiny`.
"""

from configs.common import is_tiny, shrink_to_tiny, tiny_catalog
from configs.mnist import catalog_classifier


def get_config(variant: str | None = None):
    config = catalog_classifier("crossjax_mnist_svhn", ("image", "image_svhn"), None)
    config.model.modalities = ("image",)
    if is_tiny(variant):
        shrink_to_tiny(config)  # -> crossjax_mnist_svhn/tiny
        tiny_catalog(config, "train", "test")
    return config
