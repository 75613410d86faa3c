"""python scripts/train.py --config configs/spoken_digit.py --workdir runs/spoken_digit

Free Spoken Digit recordings (8 kHz speech of the digits 0-9, varying length), cropped /
zero-padded to 1 s, with the fusion classifier on `audio`. Two ways to read them:

- By TFDS name (`spoken_digit`: one `train` split of 3000 recordings, so 90% train / 10%
  test here, NOT the official split). TFDS builds this dataset's Audio feature with
  TensorFlow, so reading it needs `pip install 'crossjax[tf]'`.
- From a local copy of the FSDD `recordings/` folder (`{digit}_{speaker}_{take}.wav`), no
  TensorFlow, with the official split (takes 0-4 of every speaker and digit are the test
  set, takes 5-49 train):

      python scripts/train.py --config configs/spoken_digit.py --workdir runs/fsdd \
          --config.data.source.path=/path/to/free-spoken-digit-dataset/recordings

Tiny: `--config configs/spoken_digit.py:tiny`.
"""

from configs.mnist import catalog_classifier

FSDD_TEST_PATTERN = r"_[0-4]\.wav$"  # takes 0-4: the official test set


def get_config(variant: str | None = None):
    config = catalog_classifier(
        "spoken_digit",
        ("audio",),
        variant,
        splits=("train[:90%]", "train[90%:]"),
        tiny_splits=("train[:256]", "train[-128:]"),
        audio_length=8000,
    )
    source = config.data.source  # used when data.source.path is set
    source.format, source.test_pattern, source.num_classes = "audio_folder", FSDD_TEST_PATTERN, 10
    source.splits = ("train", "test")
    return config
