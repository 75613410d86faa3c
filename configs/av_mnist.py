"""python scripts/train.py --config configs/av_mnist.py --workdir runs/av_mnist

Audio-visual MNIST (`crossjax_av_mnist`: each MNIST digit with a `spoken_digit` recording
of its label, 1 s at 8 kHz, generated once from the catalog datasets in the same
data_dir, which needs TensorFlow): the fusion classifier on `image` + `audio`.
Tiny (pairing of the first 300 digits, 0.5 s audio): `--config configs/av_mnist.py:tiny`.
"""

from configs.common import is_tiny, shrink_to_tiny, tiny_catalog
from configs.mnist import catalog_classifier


def get_config(variant: str | None = None):
    config = catalog_classifier("crossjax_av_mnist", ("image", "audio"), None)
    if is_tiny(variant):
        shrink_to_tiny(config)  # -> crossjax_av_mnist/tiny
        tiny_catalog(config, "train", "test")
    return config
