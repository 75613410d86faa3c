"""python scripts/train.py --config configs/fashion_mnist.py --workdir runs/fashion_mnist

Fashion-MNIST from the TFDS catalog (`fashion_mnist`: 28x28 grey clothing, 10 classes)
with the fusion classifier on `image` (CNN encoder). Preparing it once needs TensorFlow
(`pip install 'crossjax[tf]'`). Or read your local copy of the four idx files (no
TensorFlow; Debian's `dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist):
`--config.data.source.path=/usr/share/datasets/fashion-mnist`.
Tiny: `--config configs/fashion_mnist.py:tiny`.
"""

from configs.mnist import catalog_classifier, local_idx


def get_config(variant: str | None = None):
    return local_idx(catalog_classifier("fashion_mnist", ("image",), variant))
