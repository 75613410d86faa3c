"""python scripts/train.py --config configs/mnist.py --workdir runs/mnist

MNIST from the TFDS catalog (`mnist`: 28x28 grey digits, 60k train / 10k test) with the
fusion classifier on `image` (CNN encoder). Preparing mnist once needs TensorFlow
(`pip install 'crossjax[tf]'`), or point `--config.data.data_dir` at a copy prepared
elsewhere with file_format='array_record'. Or read your local copy of the four idx files
(no TensorFlow, no network), converted once into the data_dir:

    python scripts/train.py --config configs/mnist.py --workdir runs/mnist \
        --config.data.source.path=/path/to/mnist_idx_folder

Tiny variant (8 steps on the first 512 train and 256 test digits):
`--config configs/mnist.py:tiny`.

Also home of `catalog_classifier`, which the other catalog configs share.
"""

import ml_collections

from configs.common import TINY_EVAL, TINY_TRAIN, is_tiny, run_length, tiny_catalog
from configs.digits_fusion import classifier_config


def catalog_classifier(
    name: str,
    modalities: tuple[str, ...],
    variant: str | None,
    *,
    splits: tuple[str, str] = ("train", "test"),
    tiny_splits: tuple[str, str] | None = None,
    image_encoder: str = "cnn",
    **data_fields,
) -> ml_collections.ConfigDict:
    """The fusion classifier over `modalities` of catalog dataset `name`, predicting its
    `label`; `data_fields` set further `config.data` fields."""
    config = classifier_config(modalities, None)
    config.data.name = name
    config.data.train_split, config.data.test_split = splits
    for key, value in data_fields.items():
        config.data[key] = value
    config.model.image_encoder = image_encoder
    run_length(config, steps=3000, batch_size=128, eval_every=1000, checkpoint_every=1000)
    if is_tiny(variant):
        train, test = splits
        tiny_catalog(config, *(tiny_splits or (f"{train}[:{TINY_TRAIN}]", f"{test}[:{TINY_EVAL}]")))
    return config


def local_idx(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` reading a local folder of 10-class idx files when data.source.path is set."""
    config.data.source.format = "idx"
    config.data.source.num_classes = 10
    return config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return local_idx(catalog_classifier("mnist", ("image",), variant))
