"""python scripts/train.py --config configs/fashion_mnist.py --workdir runs/fashion_mnist

Fashion-MNIST from the TFDS catalog (`fashion_mnist`: 28x28 grey clothing, 10 classes)
with the fusion classifier on `image` (CNN encoder). Preparing it once needs TensorFlow
(`pip install 'crossjax[tf]'`). Tiny: `--config configs/fashion_mnist.py:tiny`.
"""

from configs.mnist import catalog_classifier


def get_config(variant: str | None = None):
    return catalog_classifier("fashion_mnist", ("image",), variant)
