"""python scripts/train.py --config configs/files_idx.py --workdir runs/my_idx \
    --config.data.source.path=/path/to/folder_with_idx_files

MNIST-format idx files (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`
and the `t10k-` pair, as distributed for MNIST, Fashion-MNIST, KMNIST, ...) converted
once into the data_dir, no TensorFlow needed: the fusion classifier on `image` (grey,
native size) predicting `label`. See docs/train_on_your_data.md.
Tiny (8 steps): `--config configs/files_idx.py:tiny`.
"""

from configs.files_manifest import files_classifier


def get_config(variant: str | None = None):
    return files_classifier("idx", ("image",), variant)
