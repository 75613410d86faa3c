"""Your own files, continued: the audio folder format, bad files (counted and named, never
a crash), hold-outs drawn from usable rows, the source's own image size, and a recipe
(files_* config) for every task, each trained a few steps on a small fixture source."""

import importlib
import logging

import numpy as np
import pytest

from crossjax import train as train_lib
from crossjax.data import folder_formats
from crossjax.errors import CrossjaxError
from tests.test_real_data import _few_steps, _wav

FSDD_TEST = r"_[0-4]\.wav$"


def write_audio_folder(root, digits=3, speakers=("ann", "bob"), takes=8):
    """FSDD-named WAVs `{digit}_{speaker}_{take}.wav` (takes 0-4: test) plus three bad
    files: a truncated WAV, a name without a label, a label outside 10 classes."""
    root.mkdir(parents=True)
    for d in range(digits):
        for s in speakers:
            for t in range(takes):
                _wav(root / f"{d}_{s}_{t}.wav", 200 + 7 * d + t)
    _wav(root / "1_ann_30.wav", 300)
    data = (root / "1_ann_30.wav").read_bytes()
    (root / "1_ann_30.wav").write_bytes(data[: len(data) - 200])  # header says 300 frames
    _wav(root / "noise.wav", 100)
    _wav(root / "12_ann_9.wav", 100)
    return root


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    return write_audio_folder(tmp_path_factory.mktemp("fsdd") / "recordings")


def test_audio_folder_labels_by_name_and_splits_by_pattern(audio_folder):
    table = folder_formats.read_audio_folder(
        str(audio_folder), test_pattern=FSDD_TEST, num_classes=10
    )
    train, test = table.splits["train"], table.splits["test"]
    take = lambda row: int(row.where.rsplit("_", 1)[1].split(".")[0])  # noqa: E731
    assert len(train) == 3 * 2 * 3 and len(test) == 3 * 2 * 5
    assert all(take(r) >= 5 for r in train) and all(take(r) <= 4 for r in test)
    assert {r.label for r in train + test} == {"0", "1", "2"}
    assert table.label_names == [str(i) for i in range(10)]
    bad = dict(table.bad_rows)
    assert set(bad) == {"1_ann_30.wav", "noise.wav", "12_ann_9.wav"}
    assert "truncated WAV" in bad["1_ann_30.wav"] and "label_pattern" in bad["noise.wav"]
    assert "outside the 10 classes" in bad["12_ann_9.wav"]


def test_audio_folder_labels_by_class_sub_folder(tmp_path):
    for label in ("no", "yes"):
        (tmp_path / label).mkdir()
        for i in range(4):
            _wav(tmp_path / label / f"take{i}.wav", 100 + i)
    table = folder_formats.read_audio_folder(str(tmp_path), test_fraction=0.25)
    assert {r.label for r in table.splits["train"]} == {"no", "yes"}
    assert len(table.splits["test"]) == 2 and table.label_names == ["no", "yes"]
    with pytest.raises(CrossjaxError, match="needs a group named label"):
        folder_formats.read_audio_folder(str(tmp_path), label_pattern="^(.)")


def test_spoken_digit_config_reads_a_local_fsdd_copy(audio_folder, tmp_path, caplog):
    config = _few_steps(importlib.import_module("configs.spoken_digit").get_config("tiny"))
    config.data.source.path = str(audio_folder)
    config.data.data_dir = str(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="crossjax.data.files"):
        metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))["test"]
    assert metrics["num_examples"] == 30 and np.isfinite(metrics["loss"])  # the official test
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "crossjax.data.files"]
    assert "Skipped 3 of 51 rows" in warning and "truncated WAV" in warning
