"""python scripts/train.py --config configs/digits_fusion_sum.py --workdir runs/digits_fusion_sum

Image + text + audio of `crossjax_digits` classified after the sum of the per-modality
embeddings; also measures robustness to a missing or noisy modality. Tiny variant for
tests: `--config configs/digits_fusion_sum.py:tiny`.
"""

from configs.digits_fusion import MODALITIES, classifier_config


def get_config(variant: str | None = None):
    config = classifier_config(MODALITIES, variant)
    config.model.fusion = "sum"
    config.model.fusion_kwargs = {}
    if "robustness" not in config.evaluators:
        config.evaluators = (*config.evaluators, "robustness")
    return config
