"""The audio-visual digits pairing (`crossjax_av_mnist`) built from local files: MNIST idx
and FSDD-named WAV fixtures written here. Split separation, labels that agree across the
three views, seeded determinism, bad recordings skipped and named, and a tiny config
that trains a few steps on it."""

import logging

import numpy as np
import pytest

from configs import av_mnist
from crossjax import train as train_lib
from crossjax.data import pairing_sources, pairings
from crossjax.data.digit_text import NUMBER_WORDS
from crossjax.errors import ConfigError, CrossjaxError
from tests.test_real_data import _idx, _wav

SPEAKERS, TAKES = ("ana", "bob"), 8  # takes 0-4 are FSDD's test set, 5-7 train


def write_sources(root):
    """MNIST idx (40 train / 40 t10k digits) and FSDD recordings: 10 digits x 2 speakers
    x 8 takes, plus a truncated WAV and a file named outside the FSDD pattern."""
    mnist, fsdd = root / "mnist", root / "fsdd"
    mnist.mkdir(parents=True)
    fsdd.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 40)):
        _idx(mnist / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(mnist / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) * 3) % 10)
    for digit in range(10):
        for speaker in SPEAKERS:
            for take in range(TAKES):
                _wav(fsdd / f"{digit}_{speaker}_{take}.wav", 300 + 37 * digit + take)
    (fsdd / "3_ana_9.wav").write_bytes((fsdd / "3_ana_0.wav").read_bytes()[:60])  # truncated
    _wav(fsdd / "hello.wav", 100)
    return str(mnist), str(fsdd)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return write_sources(tmp_path_factory.mktemp("av_sources"))


def build(sources, data_dir, name="crossjax_av_mnist", **fields):
    mnist, fsdd = sources
    config = pairings.local_builder_config(name, {"mnist": mnist, "spoken_digit": fsdd})
    for key, value in fields.items():
        setattr(config, key, value)
    builder = pairings.CrossjaxAvMnist(
        config=config, data_dir=str(data_dir), file_format="array_record"
    )
    builder.download_and_prepare()
    return {
        split: [s[i] for i in range(len(s))]
        for split in ("train", "test")
        for s in [builder.as_data_source(split=split)]
    }


def test_local_pairs_keep_splits_apart_and_views_agree(sources, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="crossjax.data.pairing_sources"):
        splits = build(sources, tmp_path, k=2, audio_length=256)
    assert "truncated WAV 3_ana_9.wav" in caplog.text and "hello.wav" in caplog.text
    assert caplog.text.count("Skipped 2 of 162 recordings") == 1  # read once for both splits
    names = pairing_sources.local_recordings(sources[1]).names
    mnist_labels = {"train": (np.arange(40) * 3) % 10, "test": (np.arange(40) * 3) % 10}
    used = {}
    for split, examples in splits.items():
        assert len(examples) == 2 * len(mnist_labels[split])  # k recordings per digit
        used[split] = {int(e["audio_index"]) for e in examples}
        for e in examples:
            label = int(e["label"])
            name = names[e["audio_index"]]
            take = int(name.split("_")[2].split(".")[0])
            assert (take < 5) == (split == "test")  # FSDD's official split
            assert int(name[0]) == label == mnist_labels[split][e["mnist_index"]]
            words = e["text"].decode().split()
            assert NUMBER_WORDS[label] in words or str(label) in words
            assert e["audio"].shape == (256,) and e["image"].shape == (28, 28, 1)
    assert not used["train"] & used["test"]  # no recording in both splits


def test_local_pairing_is_seeded_and_named_by_its_paths(sources, tmp_path):
    def pairs(splits):
        return [(int(e["mnist_index"]), int(e["audio_index"]), e["text"]) for e in splits["train"]]

    first = pairs(build(sources, tmp_path / "a", audio_length=64))
    assert first == pairs(build(sources, tmp_path / "b", audio_length=64))
    assert first != pairs(build(sources, tmp_path / "c", audio_length=64, seed=1))
    mnist, fsdd = sources
    a = pairings.local_builder_config(
        "crossjax_av_mnist/tiny", {"mnist": mnist, "spoken_digit": fsdd}
    )
    b = pairings.local_builder_config(
        "crossjax_av_mnist/tiny", {"mnist": mnist, "spoken_digit": "/x"}
    )
    assert a.name.startswith("tiny_local_") and a.name != b.name and a.max_examples == 300
    assert pairings.local_builder_config("crossjax_av_mnist", {"mnist": ""}) is None
    with pytest.raises(ConfigError, match="local sources are mnist, spoken_digit"):
        pairings.local_builder_config("crossjax_av_mnist", {"svhn": "/x"})
    with pytest.raises(ConfigError, match="pairings that read local files"):
        pairings.local_builder_config("crossjax_mnist_svhn", {"mnist": mnist})


def test_unusable_local_folders_are_one_line_errors(sources, tmp_path):
    with pytest.raises(CrossjaxError, match="holds no .wav recordings"):
        pairing_sources.local_recordings(str(tmp_path))
    with pytest.raises(CrossjaxError, match="no MNIST train images idx file"):
        pairing_sources.local_images(str(tmp_path), "train", None)


def test_tiny_config_trains_on_the_local_pairing(sources, tmp_path):
    # The multimodal VAEs' tiny variants (full and with missing modalities) train on the
    # local pairing end to end in tests/test_reproduce.py (row av_digits_mvae:tiny).
    config = av_mnist.get_config("tiny")
    config.data.pairing_sources.mnist, config.data.pairing_sources.spoken_digit = sources
    config.data.data_dir = str(tmp_path / "data")
    config.num_devices, config.num_train_steps, config.batch_size = 1, 2, 8
    # No judge run here, and the 16-example validation hold-out lacks the 8 examples per
    # class of the picture grid: the generation evaluators are tested on their own.
    skip = ("coherence", "crossmodal_images")
    config.evaluators = tuple(e for e in config.evaluators if e[0] not in skip)
    assert config.data.modalities == ("image", "audio", "text")
    metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))["test"]
    assert metrics["num_examples"] == 2 * 40 and np.isfinite(metrics["loss"])  # k = 2


def test_cotraining_variant_trains_on_partly_labelled_pairs(sources, tmp_path):
    config = av_mnist.get_config("cotrain_tiny")
    config.data.pairing_sources.mnist, config.data.pairing_sources.spoken_digit = sources
    config.data.data_dir = str(tmp_path / "data")
    config.num_devices, config.num_train_steps, config.batch_size = 1, 2, 8
    assert config.data.num_labels == 20 and config.data.labeled_batch_size == 4
    metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))["test"]
    for m in ("image", "audio"):  # each head's own accuracy beside the averaged one
        assert 0.0 <= metrics[f"head_accuracy/{m}"] <= 1.0
        assert 0.0 <= metrics[f"pseudo_label_rate/{m}"] <= 1.0
    assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["accuracy"] <= 1.0


def test_variants_choose_models_and_reject_unknown_ones():
    assert av_mnist.get_config("audio").data.modalities == ("audio",)
    vae = av_mnist.get_config("mopoe_missing")
    assert vae.model.posterior == "mopoe" and vae.data.missing_fraction == 0.5
    coherence = dict(vae.evaluators)["coherence"]
    assert coherence["classifiers"]["image"]["workdir"] == "coherence/mnist_cnn"
    assert "audio_to_image" in coherence["pairs"]
    with pytest.raises(ConfigError, match="one model"):
        av_mnist.get_config("mvae_mopoe")
    for variant in ("mopoe_fixmatch", "cotrain_labels", "image_fixmatch_labels"):
        with pytest.raises(ConfigError, match="goes with a classifier model"):
            av_mnist.get_config(variant)
    fixmatch = av_mnist.get_config("audio_fixmatch")
    assert fixmatch.losses[0][0] == "fixmatch" and fixmatch.data.num_labels == 100
    assert fixmatch.data.labeled_batch_size == 32 and fixmatch.num_train_steps == 800
