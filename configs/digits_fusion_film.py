"""python scripts/train.py --config configs/digits_fusion_film.py --workdir runs/digits_fusion_film

Image + text + audio of `crossjax_digits` classified after FiLM: the image features
scaled and shifted by an affine map predicted from the text and audio embeddings; also
measures robustness to a missing or noisy modality. Tiny variant for tests: `--config
configs/digits_fusion_film.py:tiny`.
"""

from configs.digits_fusion import MODALITIES, classifier_config


def get_config(variant: str | None = None):
    config = classifier_config(MODALITIES, variant)
    config.model.fusion = "film"
    config.model.fusion_kwargs = {"conditioned": "image"}
    if "robustness" not in config.evaluators:
        config.evaluators = (*config.evaluators, "robustness")
    return config
