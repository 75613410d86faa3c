"""python scripts/train.py --config configs/spoken_digit.py --workdir runs/spoken_digit

Free Spoken Digit recordings from the TFDS catalog (`spoken_digit`: 8 kHz speech of the
digits 0-9, varying length, one `train` split of 3000 recordings: 90% train / 10% test
here), cropped/zero-padded to 1 s, with the fusion classifier on `audio`. TFDS builds
this dataset's Audio feature with TensorFlow, so reading it needs
`pip install 'crossjax[tf]'`. Tiny: `--config configs/spoken_digit.py:tiny`.
"""

from configs.mnist import catalog_classifier


def get_config(variant: str | None = None):
    return catalog_classifier(
        "spoken_digit",
        ("audio",),
        variant,
        splits=("train[:90%]", "train[90%:]"),
        tiny_splits=("train[:256]", "train[-128:]"),
        audio_length=8000,
    )
