"""python scripts/train.py --config configs/files_idx.py --workdir runs/my_idx \
    --config.data.source.path=/path/to/folder_with_idx_files

MNIST-format idx files (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`
and the `t10k-` pair, as distributed for MNIST, Fashion-MNIST, KMNIST, ...) converted
once into the data_dir, no TensorFlow needed: the fusion classifier on `image` (the
source's own size and grey mode) predicting `label`, with a three-layer CNN
(32-64-128 channels). Labels must be < 10 (`data.source.num_classes`; others are bad
rows; set 0 to infer the classes, e.g. for EMNIST). See docs/train_on_your_data.md.
Tiny (8 steps): `--config configs/files_idx.py:tiny`.
"""

from configs.common import is_tiny
from configs.files_manifest import files_classifier


def get_config(variant: str | None = None):
    config = files_classifier("idx", ("image",), variant)
    config.data.source.num_classes = 10
    if not is_tiny(variant):
        # A third conv layer learns real digits much faster than (32, 64) for about twice
        # the step time (the probe: results/config_choices.md).
        config.model.encoder_kwargs = {"image": {"channels": (32, 64, 128)}}
    return config
