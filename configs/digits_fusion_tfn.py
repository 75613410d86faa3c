"""python scripts/train.py --config configs/digits_fusion_tfn.py --workdir runs/digits_fusion_tfn

Image + text + audio of `crossjax_digits` classified after tensor fusion (Zadeh et al.
2017): the outer product of the [z; 1] of embeddings projected to 16 dimensions (17^3 =
4913 features); also measures robustness to a missing or noisy modality. Tiny variant
for tests: `--config configs/digits_fusion_tfn.py:tiny`.
"""

from configs.digits_fusion import MODALITIES, classifier_config


def get_config(variant: str | None = None):
    config = classifier_config(MODALITIES, variant)
    config.model.fusion = "tfn"
    config.model.fusion_kwargs = {"dim": 16}
    if "robustness" not in config.evaluators:
        config.evaluators = (*config.evaluators, "robustness")
    return config
