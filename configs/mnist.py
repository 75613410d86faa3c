"""python scripts/train.py --config configs/mnist.py --workdir runs/mnist

MNIST from the TFDS catalog (`mnist`: 28x28 grey digits, 60k train / 10k test) with the
fusion classifier on `image` (CNN encoder). Preparing mnist once needs TensorFlow
(`pip install 'crossjax[tf]'`), or point `--config.data.data_dir` at a copy prepared
elsewhere with file_format='array_record'. Tiny variant (8 steps on the first 512 train
and 256 test digits): `--config configs/mnist.py:tiny`.

Also home of the helpers the other catalog configs share.
"""

import ml_collections

from configs.digits_fusion import classifier_config

TINY_TRAIN, TINY_EVAL = 512, 256


def tiny_catalog(config: ml_collections.ConfigDict, train_split: str, eval_split: str) -> None:
    """A few small steps on the given (small) splits: for tests and smoke runs."""
    config.num_train_steps = 8
    config.batch_size = 16
    config.log_every = 4
    config.eval_every = 0
    config.checkpoint_every = 4
    config.optimizer.warmup_steps = 2
    config.data.train_split, config.data.test_split = train_split, eval_split
    if config.model.name == "fusion_classifier":
        config.model.features = 32
        config.model.hidden = (64,)
        config.model.image_encoder = "mlp"  # compiles fast


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
    config.num_train_steps = 3000
    config.eval_every = 1000
    config.checkpoint_every = 1000
    if variant == "tiny":
        train, test = splits
        tiny_catalog(config, *(tiny_splits or (f"{train}[:{TINY_TRAIN}]", f"{test}[:{TINY_EVAL}]")))
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; valid: tiny")
    return config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return catalog_classifier("mnist", ("image",), variant)
