"""python scripts/train.py --config configs/digits_text.py --workdir runs/digits_text

Single-modality baseline: the digits classifier on `text` alone (compare with
configs/digits_fusion.py). Tiny variant for tests: `--config configs/digits_text.py:tiny`.
"""

from configs.digits_fusion import classifier_config


def get_config(variant: str | None = None):
    return classifier_config(("text",), variant)
