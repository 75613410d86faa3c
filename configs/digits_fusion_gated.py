"""python scripts/train.py --config configs/digits_fusion_gated.py --workdir runs/digits_fusion_gated

Image + text + audio of `crossjax_digits` classified after a gated multimodal unit (GMU,
Arevalo et al. 2017): tanh projections weighted by a softmax gate over the modalities;
also measures robustness to a missing or noisy modality. Tiny variant for tests:
`--config configs/digits_fusion_gated.py:tiny`.
"""

from configs.digits_fusion import MODALITIES, classifier_config


def get_config(variant: str | None = None):
    config = classifier_config(MODALITIES, variant)
    config.model.fusion = "gated"
    config.model.fusion_kwargs = {"gate": "softmax"}
    if "robustness" not in config.evaluators:
        config.evaluators = (*config.evaluators, "robustness")
    return config
