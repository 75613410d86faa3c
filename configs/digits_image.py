"""python scripts/train.py --config configs/digits_image.py --workdir runs/digits_image

Single-modality baseline: the digits classifier on `image` alone (compare with
configs/digits_fusion.py). Tiny variant for tests: `--config configs/digits_image.py:tiny`.
"""

from configs.digits_fusion import classifier_config


def get_config(variant: str | None = None):
    return classifier_config(("image",), variant)
