"""Your own files, continued: the audio folder format, bad files (counted and named, never
a crash), hold-outs drawn from usable rows, the source's own image size, and a recipe
(files_* config) for every task, each trained a few steps on a small fixture source."""

import importlib
import json
import logging

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from crossjax import cli
from crossjax import train as train_lib
from crossjax.data import folder_formats
from crossjax.data.pipeline import DataPipeline
from crossjax.errors import ConfigError, CrossjaxError
from tests.test_real_data import (
    MOCK,
    _data,
    _few_steps,
    _idx,
    _image,
    _wav,
    write_coco,
    write_idx,
)

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


# -- bad files never crash a run ---------------------------------------------------------------
def _files_data(fmt, path, tmp_path, modalities=("image",), **fields):
    data = _data("files", modalities, data_dir=str(tmp_path / "data"), **fields)
    data.source.format, data.source.path = fmt, str(path)
    return data


def _file_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "crossjax.data.files"]


def test_an_idx_file_of_the_wrong_kind_is_one_error_line(tmp_path, capfd):
    root = write_idx(tmp_path / "idx")
    _idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros((16, 28, 28)))  # images, not labels
    config = _few_steps(importlib.import_module("configs.files_idx").get_config("tiny"))
    config.data.source.path, config.data.data_dir = str(root), str(tmp_path / "data")
    code = cli.call(train_lib.train_and_evaluate, config, str(tmp_path / "run"))
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == cli.EXIT_USER_ERROR and "Traceback" not in err and len(errors) == 1
    assert "t10k-labels-idx1-ubyte.gz" in errors[0] and "expected 0x0801" in errors[0]


def test_idx_labels_outside_the_classes_are_bad_rows(tmp_path, caplog):
    root = write_idx(tmp_path / "idx")
    labels = np.arange(32) % 10
    labels[[3, 17]] = 255
    _idx(root / "train-labels-idx1-ubyte.gz", labels)
    data = _files_data("idx", root, tmp_path)
    data.source.num_classes = 10
    with caplog.at_level(logging.WARNING, logger="crossjax.data.files"):
        p = DataPipeline(data, batch_size=8, seed=0, vocab_path=None)
    (warning,) = _file_warnings(caplog)
    assert "Skipped 2 of 48 rows" in warning and "[3]: label 255 is outside the 10" in warning
    assert p.spec.num_classes == 10 and sum(p.num_examples.values()) == 46


def test_the_test_hold_out_is_drawn_from_usable_rows(tmp_path, caplog):
    (tmp_path / "img").mkdir()
    lines = ["image,label"] + [f"missing{i}.png,{'ab'[i % 2]}" for i in range(36)]
    for i in range(4):  # two usable images per label among 18 missing ones
        _image(tmp_path / "img" / f"{i}.png", 8, 8, seed=i)
        lines.append(f"img/{i}.png,{'ab'[i % 2]}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    data = _files_data("manifest", tmp_path / "m.csv", tmp_path, validation_fraction=0.5)
    data.source.test_fraction = 0.25  # of 40 rows: 10, all of them missing files by chance
    with caplog.at_level(logging.WARNING, logger="crossjax.data.files"):
        p = DataPipeline(data, batch_size=1, seed=0, vocab_path=None)
    assert p.num_examples == {"train": 1, "validation": 1, "test": 2}  # 1 of 2 per label
    (warning,) = _file_warnings(caplog)
    assert "Skipped 36 of 40 rows" in warning and "and 31 more" in warning


def test_coco_counts_bad_images_and_bad_captions_apart(tmp_path, caplog):
    path = write_coco(tmp_path / "coco")
    num_captions = len(json.loads(path.read_text())["annotations"])
    data = _files_data("coco", path, tmp_path, ("image", "text"), label_key="", image_size=(8, 8))
    data.vocab_min_count, data.source.images = 1, str(path.parent / "images")
    with caplog.at_level(logging.WARNING, logger="crossjax.data.files"):
        DataPipeline(data, batch_size=4, seed=0, vocab_path=None)
    (warning,) = _file_warnings(caplog)
    assert "Skipped 1 of 20 images (" in warning and "004.jpg: no caption" in warning
    assert f"and 1 of {num_captions} captions (annotation {num_captions - 1}: empty" in warning


# -- the source's own image size and mode ------------------------------------------------------
def _fit_lines(caplog):
    return [
        r.getMessage() for r in caplog.records if "data.image_size/image_mode" in r.getMessage()
    ]


def test_images_keep_the_source_size_and_mode_unless_the_config_says(tmp_path, caplog):
    root = write_idx(tmp_path / "idx")
    with caplog.at_level(logging.INFO):
        assert DataPipeline(
            _files_data("idx", root, tmp_path), batch_size=8, seed=0, vocab_path=None
        ).spec.image_shape == (28, 28, 1)
        assert not _fit_lines(caplog)
        data = _files_data("idx", root, tmp_path, image_size=(32, 32), image_mode="RGB")
        assert DataPipeline(data, batch_size=8, seed=0, vocab_path=None).spec.image_shape == (
            32, 32, 3)  # fmt: skip
    (line,) = _fit_lines(caplog)
    assert "28x28 L images" in line and "to 32x32 RGB" in line
    grey = tmp_path / "grey"
    for label in ("x", "y"):
        (grey / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((12, 10), 40 * i, np.uint8)).save(grey / label / f"{i}.png")
    data = _files_data("image_folder", grey, tmp_path, validation_fraction=0.5)
    data.source.test_fraction = 0.34
    assert DataPipeline(data, batch_size=1, seed=0, vocab_path=None).spec.image_shape == (12, 10, 1)


def test_a_catalog_config_that_resizes_says_so_once(caplog):
    data = _data("mnist", image_size=(32, 32), image_mode="RGB")
    with tfds.testing.mock_data(num_examples=16, policy=MOCK), caplog.at_level(logging.INFO):
        DataPipeline(data, batch_size=8, seed=0, vocab_path=None)
    (line,) = _fit_lines(caplog)
    assert "mnist's 28x28x1 image to 32x32x3" in line


# -- a recipe for every task on your own files ---------------------------------------------------
@pytest.fixture(scope="module")
def recipe_sources(tmp_path_factory, audio_folder):
    root = tmp_path_factory.mktemp("recipes")
    return {"idx": write_idx(root / "idx"), "coco": write_coco(root / "coco"),
            "audio_folder": audio_folder}  # fmt: skip


RECIPES = {  # config[:variant] -> (source, metric the run must report)
    "files_vae": ("idx", "neg_elbo"),
    "files_clip": ("coco", "retrieval/i2t_r1"),
    "files_clip:siglip_tiny": ("coco", "retrieval/i2t_r1"),
    "files_captioner": ("coco", "captioning/bleu4_beam"),
    "files_audio_folder": ("audio_folder", "accuracy"),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_files_recipes_train_on_their_source_path_alone(recipe, recipe_sources, tmp_path):
    name, _, variant = recipe.partition(":")
    fmt, metric = RECIPES[recipe]
    config = _few_steps(importlib.import_module(f"configs.{name}").get_config(variant or "tiny"))
    config.data.source.path = str(recipe_sources[fmt])
    if fmt == "coco":
        config.data.source.images = str(recipe_sources[fmt].parent / "images")
    config.data.data_dir = str(tmp_path / "data")
    metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))["test"]
    assert metrics["num_examples"] > 0 and np.isfinite(metrics["loss"])
    assert any(k == metric or k.endswith(metric) for k in metrics), sorted(metrics)


def test_source_splits_must_name_two_splits(audio_folder):
    data = _files_data("audio_folder", audio_folder, audio_folder.parent, ("audio",))
    data.source.splits = ("train",)
    with pytest.raises(ConfigError, match=r"data.source.splits=\('train',\); valid: \(train"):
        DataPipeline(data, batch_size=8, seed=0, vocab_path=None)
