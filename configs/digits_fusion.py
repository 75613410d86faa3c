"""python scripts/train.py --config configs/digits_fusion.py --workdir runs/digits_fusion

Image + text + audio of `crossjax_digits` fused by concatenation into an MLP classifier:
the `make demo` default. Tiny variant for tests: `--config configs/digits_fusion.py:tiny`.
"""

import ml_collections

from crossjax.config import base_config

MODALITIES = ("image", "text", "audio")


def classifier_config(
    modalities: tuple[str, ...], variant: str | None
) -> ml_collections.ConfigDict:
    """The digits classifier over `modalities`; shared by the single-modality baselines."""
    config = base_config()
    config.num_train_steps = 1500
    config.batch_size = 128
    config.log_every = 100
    config.eval_every = 500
    config.checkpoint_every = 500
    config.best_metric = "accuracy"
    config.best_mode = "max"
    config.data.name = "crossjax_digits"
    config.data.modalities = modalities
    config.data.max_text_len = 16
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
    config.optimizer.learning_rate = 2e-3
    if variant == "tiny":
        shrink_to_tiny(config)
    elif variant == "clean":  # clean images and informative text (crossjax_digits/clean)
        config.data.name = "crossjax_digits/clean"
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; valid: tiny, clean")
    return config


def shrink_to_tiny(config: ml_collections.ConfigDict) -> None:
    """A few steps on the tiny dataset variant: for tests and smoke runs."""
    config.data.name = config.data.name.split("/")[0] + "/tiny"
    config.num_train_steps = 8
    config.batch_size = 16
    config.log_every = 4
    config.eval_every = 0
    config.checkpoint_every = 4
    config.optimizer.warmup_steps = 2


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return classifier_config(MODALITIES, variant)
