"""python scripts/train.py --config configs/digits_clip.py --workdir runs/digits_clip

CLIP on the image and text of `crossjax_digits`: a small CNN image tower and a
bag-of-words text tower learn a shared space from (noisy image, noisy description) pairs
alone -- labels are never used in training. Evaluated by zero-shot classification of the
test images with prompts such as "a handwritten seven" over the ten number words the
descriptions use, and by a linear probe on the frozen image embeddings.
Tiny variant for tests: `--config configs/digits_clip.py:tiny`.

The images are deliberately degraded, so the same CNN supervised on labels bounds what
zero-shot can reach; the wider CNN and the small shared space each gained zero-shot
accuracy over narrower and wider choices (measurements: results/config_choices.md).
"""

import math

import ml_collections

from configs.common import embedded_data, is_tiny, optimizer, run_length, shrink_to_tiny
from crossjax.config import base_config

# Words of the descriptions' own templates (crossjax/data/digit_text.py).
TEMPLATES = ("a handwritten {}", "the digit {}", "the number {}", "a {}", "it is a {}")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    # Pairs repeat every ~45 steps and the test loss rises after ~500 steps (the towers
    # start to memorise draws), so training is short and the shared space small.
    run_length(config, steps=1000, batch_size=256, eval_every=500)
    embedded_data(config, ("image", "text"))
    config.model = ml_collections.ConfigDict(
        {
            "name": "two_tower",
            "image_encoder": "cnn",
            "text_encoder": "bow",
            "encoder_kwargs": {"image": {"channels": (64, 128)}, "text": {"embed_dim": 64}},
            "embed_dim": 16,
            "init_temperature": math.log(1 / 0.07),
            "init_bias": 0.0,
            "dtype": "float32",
        }
    )
    config.losses = (("clip", 1.0),)
    config.evaluators = (
        (
            "zeroshot",
            {"class_names_from": "crossjax.data.digit_text:NUMBER_WORDS", "templates": TEMPLATES},
        ),
        ("linear_probe", {"label_key": "label"}),
    )
    optimizer(config, 2e-3)
    if is_tiny(variant):
        shrink_to_tiny(config)
        config.model.encoder_kwargs = {"image": {"channels": (4,)}, "text": {"embed_dim": 8}}
        config.model.embed_dim = 8
    return config
