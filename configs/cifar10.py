"""python scripts/train.py --config configs/cifar10.py --workdir runs/cifar10

CIFAR-10 from the TFDS catalog (`cifar10`: 32x32 RGB, 10 classes) with the fusion
classifier on `image` (CNN encoder). Preparing it once needs TensorFlow
(`pip install 'crossjax[tf]'`). Tiny: `--config configs/cifar10.py:tiny`.
"""

from configs.mnist import catalog_classifier


def get_config(variant: str | None = None):
    return catalog_classifier("cifar10", ("image",), variant)
