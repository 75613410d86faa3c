"""python scripts/train.py --config configs/digits_fusion_lmf.py --workdir runs/digits_fusion_lmf

Image + text + audio of `crossjax_digits` classified after low-rank multimodal fusion
(Liu et al. 2018), rank 4; also measures robustness to a missing or noisy modality. Tiny
variant for tests: `--config configs/digits_fusion_lmf.py:tiny`.
"""

from configs.digits_fusion import MODALITIES, classifier_config


def get_config(variant: str | None = None):
    config = classifier_config(MODALITIES, variant)
    config.model.fusion = "lmf"
    config.model.fusion_kwargs = {"rank": 4}
    if "robustness" not in config.evaluators:
        config.evaluators = (*config.evaluators, "robustness")
    return config
