"""python scripts/train.py --config configs/files_manifest.py --workdir runs/my_data \
    --config.data.source.path=/path/to/manifest.jsonl

Your own data listed in a JSONL or CSV manifest (columns `image`, `text`, `audio`,
`label`, optionally `split`; any subset; paths relative to the manifest's folder),
converted once into the data_dir: the fusion classifier on `image` + `text` predicting
`label`. Images are fitted to 32x32 RGB. Change the modalities to your columns, e.g.
`--config.data.modalities="('image', 'audio')" --config.data.audio_length=16000`
(the classifier encodes every modality in `data.modalities`).
See docs/train_on_your_data.md. Tiny (8 steps): `--config configs/files_manifest.py:tiny`.

Also home of `files_classifier`, shared by the other files_* configs.
"""

import ml_collections

from configs.mnist import catalog_classifier


def files_classifier(
    fmt: str, modalities: tuple[str, ...], variant: str | None, **data_fields
) -> ml_collections.ConfigDict:
    """The fusion classifier over `modalities` of a `files` source of format `fmt`."""
    config = catalog_classifier(
        "files",
        modalities,
        variant,
        tiny_splits=("train", "test"),
        image_encoder="cnn",
        **data_fields,
    )
    config.data.source.format = fmt
    config.data.vocab_min_count = 1
    return config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = files_classifier(
        "manifest", ("image", "text"), variant, image_size=(32, 32), image_mode="RGB"
    )
    config.model.modalities = None  # encode whatever data.modalities provides
    return config
