"""python scripts/train.py --config configs/digits_fusion.py --workdir runs/digits_fusion

Image + text + audio of `crossjax_digits` fused by concatenation into an MLP classifier:
the `make demo` default. Another fusion method is a variant, any name registered in
`crossjax.models.fusion_methods.FUSIONS` (e.g. `early_concat`, `sum`, `gated`, `tfn`,
`lmf`, `film`, `cross_attention`):
`--config configs/digits_fusion.py:film`; a method given this way also runs the
robustness evaluator (accuracy with a missing or noisier modality). A variant joins a
method and the flags `tiny` (a few steps on the tiny dataset, for tests) and `clean`
(clean images and informative text) with "_": `:tiny`, `:film_tiny`, `:lmf_clean`.
`classifier_config` is shared by the single-modality baselines (configs/digits_image.py,
digits_text.py, digits_audio.py).
"""

import ml_collections

from configs.common import (
    DIGITS_MODALITIES,
    best_checkpoint,
    embedded_data,
    optimizer,
    run_length,
    shrink_to_tiny,
)
from crossjax.config import base_config, variant_flags
from crossjax.errors import ConfigError
from crossjax.models.fusion_methods import FUSIONS

FLAGS = ("tiny", "clean")  # a variant joins any of them (and one fusion method) with "_"
# The fields of each method's module (config.model.fusion_kwargs); a registered method
# not listed here keeps its module's defaults.
FUSION_KWARGS = {
    "early_concat": {"hidden": (256,)},  # raw inputs -> one shared MLP
    "gated": {"gate": "softmax"},  # GMU, Arevalo et al. 2017
    "tfn": {"dim": 16},  # tensor fusion, Zadeh et al. 2017: 17^3 features
    "lmf": {"rank": 4},  # low-rank multimodal fusion, Liu et al. 2018
    "film": {"conditioned": "image"},  # image features modulated by text and audio
    "cross_attention": {"num_heads": 4, "num_layers": 1},
}


def classifier_config(
    modalities: tuple[str, ...], variant: str | None
) -> ml_collections.ConfigDict:
    """The digits classifier over `modalities` (variant flags: tiny, clean)."""
    flags = variant_flags(variant, FLAGS)
    config = base_config()
    run_length(config, steps=1500, batch_size=128, eval_every=500)
    best_checkpoint(config, "accuracy", "max")
    embedded_data(config, modalities)
    config.model = ml_collections.ConfigDict(
        {
            "name": "fusion_classifier",
            "modalities": modalities,
            "image_encoder": "mlp",
            "encoder_kwargs": {},
            "features": 64,
            "hidden": (128,),
            "dropout": 0.1,
            "fusion": "concat",
            "dtype": "float32",
        }
    )
    config.losses = (("cross_entropy", 1.0),)
    optimizer(config, 2e-3)
    if "clean" in flags:  # clean images and informative text (crossjax_digits/clean)
        config.data.name = "crossjax_digits/clean"
    if "tiny" in flags:
        shrink_to_tiny(config)
    return config


def split_method(variant: str | None) -> tuple[str | None, str | None]:
    """(fusion method, remaining flags) of a variant such as "cross_attention_tiny";
    ConfigError listing the registered methods for anything else."""
    methods = FUSIONS.names()
    parts = f"_{variant or ''}_"
    found = [m for m in sorted(methods, key=len, reverse=True) if f"_{m}_" in parts]
    method = found[0] if found else None
    rest = parts.replace(f"_{method}_", "_", 1) if method else parts
    rest = rest.strip("_") or None
    try:
        if variant is not None and "" in variant.split("_"):
            raise ValueError("an empty flag")
        variant_flags(rest, FLAGS)
    except ValueError:
        raise ConfigError(
            f"unknown config variant {variant!r} of configs/digits_fusion.py; valid: one fusion "
            f"method ({', '.join(methods)}) and/or the flags {', '.join(FLAGS)}, joined by '_'"
        ) from None
    return method, rest


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    method, flags = split_method(variant)
    config = classifier_config(DIGITS_MODALITIES, flags)
    if method is not None:
        config.model.fusion = method
        config.model.fusion_kwargs = FUSION_KWARGS.get(method, {})
        config.evaluators = (*config.evaluators, "robustness")
    return config
