"""python scripts/train.py --config configs/av_mnist.py --workdir runs/av_mnist

Audio-visual MNIST (`crossjax_av_mnist`: each MNIST digit with a `spoken_digit` recording
of its label, 1 s at 8 kHz, generated once from the catalog datasets in the same
data_dir, which needs TensorFlow): the fusion classifier on `image` + `audio`.
Tiny (pairing of the first 300 digits, 0.5 s audio): `--config configs/av_mnist.py:tiny`.
"""

from configs.digits_fusion import shrink_to_tiny
from configs.mnist import catalog_classifier, tiny_catalog


def get_config(variant: str | None = None):
    config = catalog_classifier("crossjax_av_mnist", ("image", "audio"), None)
    if variant == "tiny":
        shrink_to_tiny(config)  # -> crossjax_av_mnist/tiny
        tiny_catalog(config, "train", "test")
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; valid: tiny")
    return config
