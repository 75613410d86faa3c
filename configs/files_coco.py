"""python scripts/train.py --config configs/files_coco.py --workdir runs/my_captions \
    --config.data.source.path=/path/to/captions.json --config.data.source.images=/path/to/images

Your own COCO-format caption annotations (`images` with `id` + `file_name`, `annotations`
with `image_id` + `caption`) and image folder, converted once into the data_dir (test =
a seeded 10% of the images, or `--config.data.source.test_path=...` for a second
annotation file): a Gaussian VAE of the images (32x32 RGB) with the several-captions
contract (`text` one caption, `captions` (B, 5, L) all), like configs/coco_captions.py.
See docs/train_on_your_data.md. Tiny (8 steps): `--config configs/files_coco.py:tiny`.
"""

from configs.coco_captions import image_vae_config


def get_config(variant: str | None = None):
    config = image_vae_config("files", variant, tiny_splits=("train", "test"))
    config.data.source.format = "coco"
    config.data.vocab_min_count = 1
    return config
