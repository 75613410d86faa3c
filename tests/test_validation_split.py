"""Train / validation / test: the seeded stratified hold-out, its use by the pipeline, the
dataset's own validation split, lazy caching and the renamed eval_split field."""

import numpy as np
import pytest

from crossjax.config import base_config, validate_config
from crossjax.data.pipeline import DataPipeline
from crossjax.data.rows import validation_holdout
from crossjax.errors import ConfigError


def _data_config(**fields):
    config = base_config().data
    config.name = "crossjax_digits/tiny"
    config.modalities = ("image",)
    for key, value in fields.items():
        config[key] = value
    return config


def test_holdout_is_seeded_sized_and_stratified():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    np.random.default_rng(0).shuffle(labels)
    held = validation_holdout(1000, 0.1, seed=7, labels=labels)
    assert len(held) == 100 and len(np.unique(held)) == 100 and np.all(np.diff(held) > 0)
    assert np.bincount(labels[held]).tolist() == [50, 30, 20]
    np.testing.assert_array_equal(held, validation_holdout(1000, 0.1, 7, labels))
    assert not np.array_equal(held, validation_holdout(1000, 0.1, 8, labels))


def test_holdout_rounds_to_the_exact_size_and_works_without_labels():
    labels = np.array([0] * 7 + [1] * 7 + [2] * 7)  # 10% of 21 -> 2: shares 0.67 each
    held = validation_holdout(21, 0.1, 0, labels)
    assert len(held) == 2 and len(set(labels[held])) == 2
    plain = validation_holdout(21, 0.25, 0)
    assert len(plain) == 5 and plain.max() < 21
    np.testing.assert_array_equal(plain, validation_holdout(21, 0.25, 0))
    for bad in (0.0, 1.0, True, "0.1"):
        with pytest.raises(ConfigError, match="validation_fraction"):
            validation_holdout(21, bad, 0)


def test_holdout_by_group_keeps_each_group_on_one_side():
    groups = np.repeat(np.arange(50), 4)  # 50 sources, 4 draws each
    np.random.default_rng(1).shuffle(groups)
    labels = groups % 5  # every draw of a source has its label
    held = validation_holdout(200, 0.2, 3, labels, groups)
    assert len(held) == 40  # 10 whole groups
    assert not set(groups[held]) & set(np.delete(groups, held))
    assert np.bincount(labels[held], minlength=5).tolist() == [8] * 5  # 2 groups per class
    np.testing.assert_array_equal(held, validation_holdout(200, 0.2, 3, labels, groups))


def test_digits_validation_holds_out_whole_source_images():
    """crossjax_digits has 8 draws of each source image; the test split holds other source
    images, and so must validation, or it would score draws of images trained on."""
    p = DataPipeline(_data_config(), batch_size=16, seed=0, vocab_path=None)
    source = p.sources["train"]
    ids = np.array([int(source[i]["source_id"]) for i in range(len(source))])
    held = p.row_indices["validation"]
    assert len(held) > 0 and not set(ids[held]) & set(ids[p.row_indices["train"]])
    with pytest.raises(ConfigError, match="validation_group='nope' is not a feature"):
        DataPipeline(_data_config(validation_group="nope"), batch_size=16, seed=0, vocab_path=None)


def test_pipeline_holds_out_validation_disjoint_from_train_and_test(tmp_path):
    # validation_group "": the per-example stratified draw (digits groups by source image).
    p = DataPipeline(_data_config(validation_group=""), batch_size=16, seed=3, vocab_path=None)
    train, held = p.row_indices["train"], p.row_indices["validation"]
    n = len(p.sources["train"])
    assert p.num_examples == {"train": n - 48, "validation": 48, "test": len(p.sources["test"])}
    assert p.num_train == n - 48
    assert not np.intersect1d(train, held).size and len(train) + len(held) == n
    source = p.sources["train"]
    labels = np.array([source[i]["label"] for i in range(n)])
    assert np.abs(np.bincount(labels[held], minlength=10) - 4.8).max() < 1  # stratified
    test = {
        np.asarray(p.sources["test"][i]["image"]).tobytes() for i in range(len(p.sources["test"]))
    }
    assert not test & {np.asarray(source[int(i)]["image"]).tobytes() for i in held}
    other = DataPipeline(_data_config(validation_group=""), batch_size=8, seed=11, vocab_path=None)
    np.testing.assert_array_equal(other.row_indices["validation"], held)  # not the run's seed
    reseeded = DataPipeline(
        _data_config(validation_seed=1, validation_group=""), batch_size=8, seed=3, vocab_path=None
    )
    assert not np.array_equal(reseeded.row_indices["validation"], held)


def test_datasets_own_validation_split_is_used_whole(tmp_path):
    config = _data_config(train_split="train[:400]", validation_split="train[400:]")
    p = DataPipeline(config, batch_size=16, seed=0, vocab_path=None)
    assert p.num_examples["train"] == 400 and p.num_examples["validation"] == 80
    batches = list(p.eval_batches(32, split="validation"))
    labels = np.concatenate([b["label"][b["valid"]] for b in batches])
    source = p.sources["train[400:]"]
    np.testing.assert_array_equal(labels, [source[i]["label"] for i in range(80)])


def test_only_the_splits_read_are_preprocessed(tmp_path):
    p = DataPipeline(_data_config(cache="always"), batch_size=16, seed=0, vocab_path=None)
    assert not p._rows
    next(p.eval_batches(32))  # validation is the default
    assert set(p._rows) == {"validation"}
    next(p.train_iterator())
    assert set(p._rows) == {"validation", "train"} and p.rows("train").arrays is not None
    with pytest.raises(ValueError, match="split='train'"):
        p.eval_batches(32, split="train")


def test_validation_split_that_is_the_training_split_is_a_config_error():
    with pytest.raises(ConfigError, match="validation_split='train' is the training split"):
        DataPipeline(_data_config(validation_split="train"), batch_size=16, seed=0, vocab_path=None)


def test_eval_split_was_renamed_test_split():
    config = _data_config()
    config.eval_split = "test"
    with pytest.raises(ConfigError, match="eval_split was renamed data.test_split"):
        DataPipeline(config, batch_size=16, seed=0, vocab_path=None)
    full = base_config()
    full.model.name = "mlp"
    full.data.eval_split = "test"
    with pytest.raises(ConfigError, match="renamed"):
        validate_config(full)
