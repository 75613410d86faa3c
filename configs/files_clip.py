"""python scripts/train.py --config configs/files_clip.py --workdir runs/my_clip \
    --config.data.source.path=/path/to/captions.json --config.data.source.images=/path/to/images

CLIP on your own image-caption pairs: COCO-format caption annotations and their image
folder (test: a seeded 10% of the images, or `--config.data.source.test_path=...`),
converted once into the data_dir with images fitted to 64x64 RGB. The two towers of
configs/shapes_clip.py (a CNN, here three layers, and a bag-of-words text tower) trained
from scratch, evaluated by image<->text retrieval over every caption of 1,000 test
images. SigLIP's sigmoid loss: `--config configs/files_clip.py:siglip`. A JSONL/CSV
manifest with `image` and `text` columns instead: `--config.data.source.format=manifest`.
Tiny (8 steps): `--config configs/files_clip.py:tiny` (or `:siglip_tiny`).
"""

import ml_collections

from configs import shapes_clip
from configs.common import run_length
from crossjax.config import variant_flags


def image_text_files(config: ml_collections.ConfigDict, fmt: str) -> None:
    """`config` reads image + caption pairs of a `fmt` source ("coco" or "manifest"):
    images fitted to 64x64 RGB, every caption kept for evaluation (`captions`)."""
    config.data.name = "files"
    config.data.modalities = ("image", "text")
    config.data.label_key = ""
    config.data.extra_features = ()
    config.data.source.format = fmt
    config.data.image_size = (64, 64)
    config.data.image_mode = "RGB"
    config.data.max_text_len = 24
    config.data.all_captions = 5


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    flags = variant_flags(variant, ("tiny", "siglip"))
    config = shapes_clip.get_config("_".join(f for f in ("siglip", "tiny") if f in flags) or None)
    image_text_files(config, "coco")
    config.evaluators = (("retrieval", {"max_examples": 1000}),)
    if "tiny" in flags:
        config.data.image_size = (16, 16)
        config.data.vocab_min_count = 1
        config.evaluators = (("retrieval", {"max_examples": 64}),)
    else:
        run_length(config, steps=3000, batch_size=128, eval_every=1000, checkpoint_every=1000)
        config.model.encoder_kwargs.image.channels = (32, 64, 128)
    return config
