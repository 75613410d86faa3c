"""python scripts/train.py --config configs/digits_fusion_early_concat.py --workdir runs/digits_fusion_early_concat

Image + text + audio of `crossjax_digits` classified after early fusion: the raw inputs
(flattened pixels, mean word embedding, pooled log spectrogram) concatenated before one
shared MLP encoder; also measures robustness to a missing or noisy modality. Tiny
variant for tests: `--config configs/digits_fusion_early_concat.py:tiny`.
"""

from configs.digits_fusion import MODALITIES, classifier_config


def get_config(variant: str | None = None):
    config = classifier_config(MODALITIES, variant)
    config.model.fusion = "early_concat"
    config.model.fusion_kwargs = {"hidden": (256,)}
    if "robustness" not in config.evaluators:
        config.evaluators = (*config.evaluators, "robustness")
    return config
