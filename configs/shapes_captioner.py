"""python scripts/train.py --config configs/shapes_captioner.py --workdir runs/shapes_captioner

Image captioning on `crossjax_shapes`: Show and Tell with soft attention (Show, Attend
and Tell). A small CNN turns the image into an 8x8 grid of cells (features + the cell's
coordinates); an LSTM starts from the grid's mean, attends over the cells at every step
and writes the caption word by word, trained with teacher forcing (`token_cross_entropy`).
The "captioning" evaluator decodes the 2,000 test scenes greedily and with beam search
(4 beams) and reports BLEU-4, CIDEr-D and `caption_attribute_accuracy`: the fraction of
scenes whose parsed caption gets every colour, shape, size and the relation right.
Tiny variant for tests: `--config configs/shapes_captioner.py:tiny`.

Why this model: single-object scenes are easy for every variant tried; two-object scenes
need each colour bound to its shape and which object is left / upper. The globally
pooled encoder left the relation at chance, attention over the grid with learned position
embeddings swapped the two objects, and adding the cell coordinates to the attended
features fixed most of that; a smaller LSTM cost accuracy (measurements:
results/config_choices.md).
"""

import ml_collections

from configs.common import embedded_data, is_tiny, optimizer, run_length, shrink_to_tiny
from crossjax.config import base_config

SCENE_FEATURES = ("color", "shape", "size", "relation", "num_objects")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    # Batch 64 for more updates in the same time: binding colours to shapes in two-object
    # scenes keeps improving with the number of steps.
    run_length(config, steps=4500, batch_size=64, checkpoint_every=1500)
    embedded_data(config, ("image", "text"), name="crossjax_shapes")
    config.data.extra_features = SCENE_FEATURES  # ground truth for the attribute accuracy
    config.model = ml_collections.ConfigDict(
        {
            "name": "captioner",
            "image_encoder": "cnn",
            "encoder_kwargs": {"channels": (32, 64, 128)},
            "features": 128,
            "attention": True,
            "attention_dim": 64,
            "embed_dim": 64,
            "hidden": 256,
            "cell": "lstm",
            "condition_inputs": True,
            "dtype": "float32",
        }
    )
    config.losses = (("token_cross_entropy", 1.0),)
    config.evaluators = (("captioning", {"beam_size": 4, "attribute_accuracy": True}),)
    optimizer(config, 3e-3, warmup_steps=100)
    if is_tiny(variant):
        shrink_to_tiny(config)
        config.model.encoder_kwargs.channels = (4, 8)
        config.model.features = 16
        config.model.attention_dim = 8
        config.model.embed_dim = 8
        config.model.hidden = 16
        config.evaluators = (
            ("captioning", {"beam_size": 2, "attribute_accuracy": True, "num_pictures": 4}),
        )
    return config
