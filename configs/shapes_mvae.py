"""python scripts/train.py --config configs/shapes_mvae.py --workdir runs/shapes_mvae

MVAE (product of experts) of the images and captions of `crossjax_shapes` with a shared
latent: a small CNN image encoder and MLP decoders (a `"deconv"` image decoder made
a CPU step far slower: results/config_choices.md). Variants as in
configs/digits_mvae.py (`:missing`: half of the training examples lack the image or the
caption).
"""

import ml_collections

from configs.digits_mvae import BETA, multimodal_vae_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return multimodal_vae_config(
        "poe", "mvae", {"beta": BETA, "warmup_steps": 500}, variant,
        dataset="crossjax_shapes",
        modalities=("image", "text"),
        model_fields={
            "latent_dim": 32,
            "image_encoder": "cnn",
            "encoder_kwargs": {"image": {"channels": (16, 32)}},
            "decoder_hidden": (256,),
        },
    )  # fmt: skip
