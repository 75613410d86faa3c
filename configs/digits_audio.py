"""python scripts/train.py --config configs/digits_audio.py --workdir runs/digits_audio

Single-modality baseline: the digits classifier on `audio` alone (compare with
configs/digits_fusion.py). Tiny variant for tests: `--config configs/digits_audio.py:tiny`.
"""

from configs.digits_fusion import classifier_config


def get_config(variant: str | None = None):
    return classifier_config(("audio",), variant)
