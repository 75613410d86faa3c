"""python scripts/train.py --config configs/files_image_folder.py --workdir runs/my_images \
    --config.data.source.path=/path/to/image_folder

A folder with one sub-folder of images per class (or `train/` and `test/` folders that
each hold the class sub-folders; otherwise a seeded 10% per class is held out), converted
once into the data_dir with images fitted to 64x64 (photos of mixed sizes need one size;
the colour mode is the source's own: grey when the first 16 images are): the fusion
classifier (CNN) on
`image` predicting the class (sorted folder names -> ids). See docs/train_on_your_data.md.
Tiny (8 steps): `--config configs/files_image_folder.py:tiny`.
"""

from configs.files_manifest import files_classifier


def get_config(variant: str | None = None):
    return files_classifier("image_folder", ("image",), variant, image_size=(64, 64))
