"""python scripts/train.py --config configs/svhn.py --workdir runs/svhn

Street View House Numbers from the TFDS catalog (`svhn_cropped`: 32x32 RGB digits, 73k
train / 26k test) with the fusion classifier on `image` (CNN encoder). Preparing it once
needs TensorFlow (`pip install 'crossjax[tf]'`). Tiny: `--config configs/svhn.py:tiny`.
"""

from configs.mnist import catalog_classifier


def get_config(variant: str | None = None):
    return catalog_classifier("svhn_cropped", ("image",), variant)
