"""python scripts/train.py --config configs/digits_fusion_cross_attention.py --workdir runs/digits_fusion_cross_attention

Image + text + audio of `crossjax_digits` classified after cross-attention: each
modality's embedding is a token attending to the others (one pre-LN block, 4 heads),
then mean-pooled; also measures robustness to a missing or noisy modality. Tiny variant
for tests: `--config configs/digits_fusion_cross_attention.py:tiny`.
"""

from configs.digits_fusion import MODALITIES, classifier_config


def get_config(variant: str | None = None):
    config = classifier_config(MODALITIES, variant)
    config.model.fusion = "cross_attention"
    config.model.fusion_kwargs = {"num_heads": 4, "num_layers": 1}
    if "robustness" not in config.evaluators:
        config.evaluators = (*config.evaluators, "robustness")
    return config
