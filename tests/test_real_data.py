"""Real data: TFDS catalog datasets (mocked offline), derived pairings, the user's files.

Catalog datasets are tested with `tfds.testing.mock_data`; the file formats on small
sources written here (PNG/JPEG with Pillow, WAV with `wave`, gzipped idx with numpy),
converted, trained for a few steps and evaluated from the checkpoint.
"""

import collections
import gzip
import importlib
import json
import logging
import types
import wave

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from crossjax import runs
from crossjax import train as train_lib
from crossjax.config import base_config
from crossjax.data import file_formats, folder_formats, pairings
from crossjax.data.imaging import fit_image_array
from crossjax.data.pipeline import DataPipeline
from crossjax.errors import ConfigError, CrossjaxError

MOCK = tfds.testing.MockPolicy.USE_CODE


@pytest.fixture
def tf_free_features(monkeypatch):
    """TFDS 4.9.10 builds coco_captions' features (coco's `tf.int64`) and the Audio
    feature (`tf.dtypes.as_dtype`) with TensorFlow, even under mock_data. Swapping exactly
    those two look-ups for numpy lets the real builders' feature specs be mocked offline."""
    from tensorflow_datasets.core.features import audio_feature
    from tensorflow_datasets.object_detection import coco

    dtypes = types.SimpleNamespace(as_dtype=np.dtype)
    monkeypatch.setattr(audio_feature, "tf", types.SimpleNamespace(dtypes=dtypes))
    monkeypatch.setattr(coco, "tf", types.SimpleNamespace(int64=np.int64))


def _data(name, modalities=("image",), **fields):
    config = base_config().data
    config.name = name
    config.modalities = modalities
    for key, value in fields.items():
        config[key] = value
    return config


# -- catalog datasets -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)),
                    ("svhn_cropped", (32, 32, 3)), ("cifar10", (32, 32, 3))],
)  # fmt: skip
def test_catalog_image_datasets_follow_the_contract(name, shape):
    with tfds.testing.mock_data(num_examples=16, policy=MOCK):
        p = DataPipeline(_data(name), batch_size=8, seed=0, vocab_path=None)
        batch = next(p.train_iterator())
    assert p.spec.image_shape == shape and p.spec.num_classes == 10
    assert batch["image"].shape == (8, *shape) and batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32


def test_coco_captions_gives_one_caption_and_all_captions(tf_free_features, tmp_path):
    data = _data("coco_captions", ("image", "text"), label_key="", image_size=(24, 20))
    data.all_captions, data.vocab_min_count = 50, 1  # more than some mocked images have
    with tfds.testing.mock_data(num_examples=16, policy=MOCK):
        p = DataPipeline(data, batch_size=8, seed=0, vocab_path=tmp_path / "v.json")
        batch = next(p.train_iterator())
        evals = next(p.eval_batches(8))
    assert batch["image"].shape == (8, 24, 20, 3) and p.spec.num_classes is None
    assert batch["text"].shape == (8, 16) and batch["text_mask"].any(axis=1).all()
    assert batch["captions"].shape == (8, 50, 16) and batch["captions"].dtype == np.int32
    assert batch["captions_mask"].shape == (8, 50, 16) and batch["captions_mask"].dtype == bool
    has = batch["captions_mask"].any(axis=2)
    assert has[:, 0].all() and not has.all()  # missing captions: all-False masks
    np.testing.assert_array_equal(evals["text"], evals["captions"][:, 0])  # eval: the first


def test_coco_captions_without_image_size_is_a_config_error(tf_free_features):
    with tfds.testing.mock_data(num_examples=8, policy=MOCK):
        with pytest.raises(ConfigError, match="varying size; set data.image_size"):
            DataPipeline(
                _data("coco_captions", label_key=""), batch_size=8, seed=0, vocab_path=None
            )


def test_spoken_digit_is_cropped_to_audio_length(tf_free_features):
    data = _data("spoken_digit", ("audio",), train_split="train[:90%]", test_split="train[90%:]")
    with tfds.testing.mock_data(num_examples=16, policy=MOCK):
        with pytest.raises(ConfigError, match="varying length; set data.audio_length"):
            DataPipeline(data, batch_size=8, seed=0, vocab_path=None)
        data.audio_length = 300
        p = DataPipeline(data, batch_size=8, seed=0, vocab_path=None)
        batch = next(p.train_iterator())
    assert batch["audio"].shape == (8, 300) and batch["audio"].dtype == np.float32
    assert p.spec.sample_rate == 8000 and p.spec.num_classes == 10
    assert np.abs(batch["audio"]).max() <= 1.0


def test_catalog_builders_that_need_tensorflow_say_how_to_get_it(tmp_path):
    with pytest.raises(CrossjaxError, match=r"needs TensorFlow.*pip install 'crossjax\[tf\]'"):
        DataPipeline(
            _data("coco_captions", data_dir=str(tmp_path)), batch_size=8, seed=0, vocab_path=None
        )


def test_preparing_mnist_without_tensorflow_says_how_to_get_it(tmp_path, monkeypatch):
    def downloaded(self, urls):  # no network here: pretend the downloads arrived
        return {k: str(tmp_path / k) for k in urls}

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", downloaded)
    with pytest.raises(CrossjaxError, match=r"preparing dataset 'mnist' needs TensorFlow: pip"):
        DataPipeline(_data("mnist", data_dir=str(tmp_path)), batch_size=8, seed=0, vocab_path=None)


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    import requests

    def offline(self, urls):
        raise requests.exceptions.ConnectionError("Max retries exceeded")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
    with pytest.raises(CrossjaxError, match="cannot download dataset 'mnist'.*check the network"):
        DataPipeline(_data("mnist", data_dir=str(tmp_path)), batch_size=8, seed=0, vocab_path=None)


# -- configs of catalog datasets and pairings, trained for a few steps -----------------------
CATALOG_CONFIGS = ["mnist", "fashion_mnist", "svhn", "cifar10", "coco_captions",
                   "spoken_digit", "mnist_svhn", "av_mnist", "polymnist"]  # fmt: skip


def _few_steps(config):
    config.num_devices = 1  # compiles faster; sharding is tested in test_train/test_scaling
    config.num_train_steps = 2
    config.batch_size = 8
    config.log_every = 2
    config.checkpoint_every = 2
    return config


@pytest.mark.parametrize("name", CATALOG_CONFIGS)
def test_catalog_and_pairing_configs_train(name, tf_free_features, tmp_path):
    config = _few_steps(importlib.import_module(f"configs.{name}").get_config("tiny"))
    with tfds.testing.mock_data(num_examples=16, policy=MOCK):
        metrics = train_lib.train_and_evaluate(config, str(tmp_path))["test"]
    assert metrics["num_examples"] == 16 and np.isfinite(metrics["loss"])


def test_pairing_views_are_batch_modalities():
    data = _data("crossjax_mnist_svhn/tiny", ("image", "image_svhn"))
    with tfds.testing.mock_data(num_examples=16, policy=MOCK):
        batch = next(DataPipeline(data, batch_size=8, seed=0, vocab_path=None).train_iterator())
        data.features, data.modalities = {"image": "image_svhn"}, ("image",)  # pick a view
        swapped = DataPipeline(data, batch_size=8, seed=0, vocab_path=None)
    assert batch["image"].shape == (8, 28, 28, 1) and batch["image_svhn"].shape == (8, 32, 32, 3)
    assert swapped.spec.image_shape == (32, 32, 3)


# -- pairings ---------------------------------------------------------------------------------
def _mocked_examples(name, n, split="train"):
    """The first n examples of a mocked catalog split, as a list (per-item reads)."""
    with tfds.testing.mock_data(num_examples=n, policy=MOCK):
        source = tfds.builder(name).as_data_source(split=split)
        return [source[i] for i in range(n)]


def _fake_speech(n):
    """spoken_digit-like recordings named like FSDD: `<digit>_<speaker>_<number>.wav`."""
    rng = np.random.default_rng(0)
    return [
        {"audio": rng.integers(-3000, 3000, size=50 + i), "label": i % 10,
         "audio/filename": f"{i % 10}_spk_{(i // 10) % 8}.wav"}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fake_sources():
    """Source splits for the pairing builders: mocked mnist (40) and svhn_cropped (60)
    examples, and 160 FSDD-named spoken_digit-like recordings."""
    return (
        {("mnist", split): _mocked_examples("mnist", 40) for split in ("train", "test")}
        | {("svhn_cropped", s): _mocked_examples("svhn_cropped", 60) for s in ("train", "test")}
        | {("spoken_digit", "train"): _fake_speech(160)}
    )


def _build_pairing(cls, data_dir, monkeypatch, fake_sources, **config):
    monkeypatch.setattr(pairings, "read_source", lambda name, split, _: fake_sources[name, split])
    builder = cls(
        config=pairings.PairingConfig(name="test", **config),
        data_dir=str(data_dir),
        file_format="array_record",
    )
    builder.download_and_prepare()
    source = builder.as_data_source(split="train")
    return [source[i] for i in range(len(source))]


def test_mnist_svhn_pairs_share_labels_and_reproduce(fake_sources, monkeypatch, tmp_path):
    build = lambda d, seed: _build_pairing(  # noqa: E731
        pairings.CrossjaxMnistSvhn, tmp_path / d, monkeypatch, fake_sources, k=3, seed=seed
    )
    examples = build("a", 0)
    mnist, svhn = fake_sources["mnist", "train"], fake_sources["svhn_cropped", "train"]
    assert len(examples) == 3 * len(mnist)
    for e in examples:
        assert e["label"] == mnist[e["mnist_index"]]["label"] == svhn[e["svhn_index"]]["label"]
        np.testing.assert_array_equal(e["image_svhn"], svhn[e["svhn_index"]]["image"])
    again, other = build("b", 0), build("c", 1)
    pairs = lambda ex: sorted((int(e["mnist_index"]), int(e["svhn_index"])) for e in ex)  # noqa: E731
    assert pairs(again) == pairs(examples) and pairs(other) != pairs(examples)


def test_av_mnist_pairs_recordings_of_the_same_digit(fake_sources, monkeypatch, tmp_path):
    examples = _build_pairing(
        pairings.CrossjaxAvMnist, tmp_path, monkeypatch, fake_sources, k=2, audio_length=64
    )
    speech = fake_sources["spoken_digit", "train"]
    for e in examples:
        recording = speech[e["audio_index"]]
        assert e["label"] == recording["label"] and e["audio"].shape == (64,)
        number = int(recording["audio/filename"].split("_")[2].split(".")[0])
        assert number >= 5  # training pairs use FSDD recordings 5.., test ones 0..4
        np.testing.assert_array_equal(e["audio"][:50], recording["audio"][:50])


def test_polymnist_views_are_different_digits_of_one_label(fake_sources, monkeypatch, tmp_path):
    build = lambda d: _build_pairing(  # noqa: E731
        pairings.CrossjaxPolymnist, tmp_path / d, monkeypatch, fake_sources, num_views=3
    )
    examples, again = build("a"), build("b")
    mnist = fake_sources["mnist", "train"]
    per_label = collections.Counter(int(m["label"]) for m in mnist)
    for e in examples:
        assert {int(mnist[j]["label"]) for j in e["mnist_index"]} == {int(e["label"])}
        assert e["m2"].shape == (28, 28, 3)
        if per_label[int(e["label"])] >= 3:  # enough instances: three different ones
            assert len(set(e["mnist_index"].tolist())) == 3
    first = lambda ex: min(ex, key=lambda e: e["mnist_index"].tolist())  # noqa: E731
    np.testing.assert_array_equal(first(examples)["m1"], first(again)["m1"])


def test_same_label_partners_and_fsdd_split():
    rng = np.random.default_rng(0)
    partners = pairings.same_label_partners(np.array([0, 1, 1]), np.array([1, 0, 1, 0]), 2, rng)
    assert partners.shape == (3, 2) and set(partners[0]) == {1, 3} and set(partners[1]) == {0, 2}
    with pytest.raises(CrossjaxError, match="no partner example has label 2"):
        pairings.same_label_partners(np.array([2]), np.array([0]), 1, rng)
    test = pairings.spoken_digit_split(["3_jackson_4.wav", "3_jackson_5.wav"], seed=0)
    assert test.tolist() == [True, False]


# -- your own files ---------------------------------------------------------------------------
def _image(path, height, width, seed, fmt="PNG"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def _wav(path, num_samples, rate=8000, channels=1):
    rng = np.random.default_rng(num_samples)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(rng.integers(-2000, 2000, num_samples * channels, dtype=np.int16).tobytes())


def write_manifest(root, rows=24):
    """A JSONL manifest of image + caption + WAV + label; rows 4, 6 and 8 are bad."""
    (root / "img").mkdir(parents=True)
    (root / "wav").mkdir()
    lines = []
    for i in range(rows):
        _image(root / "img" / f"{i}.png", 20 + i, 30, seed=i)
        _wav(root / "wav" / f"{i}.wav", 200 + 10 * i)
        pet = ["cat", "dog"][i % 2]
        lines.append({"image": f"img/{i}.png", "text": f"a photo of a {pet} number {i}",
                      "audio": f"wav/{i}.wav", "label": pet})  # fmt: skip
    lines[3]["image"] = "img/missing.png"
    (root / "img" / "broken.png").write_bytes(b"not a png")
    lines[5]["image"] = "img/broken.png"
    lines[7]["text"] = "  "
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def write_coco(root, num_images=20):
    """COCO captions: 3-5 captions per image, one empty caption, one uncaptioned image."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(num_images):
        _image(root / "images" / f"{i:03d}.jpg", 24 + 3 * i, 40, seed=100 + i, fmt="JPEG")
        images.append({"id": 1000 + i, "file_name": f"{i:03d}.jpg"})
        for c in range(3 + i % 3 if i != 4 else 0):
            caption = f"picture {i} caption {c} shows {'red blue green'.split()[c % 3]} things"
            annotations.append({"id": len(annotations), "image_id": 1000 + i, "caption": caption})
    annotations.append({"id": len(annotations), "image_id": 1000, "caption": ""})
    path = root / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def _idx(path, array):
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx(root):
    """MNIST-format gzipped idx files: 32 train and 16 t10k 28x28 digits."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 32), ("t10k", 16)):
        _idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def write_image_folder(root, per_class=10):
    """Three class folders of PNG and JPEG images of varying size, plus a stray image."""
    for c, name in enumerate(("circle", "square", "triangle")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            fmt = "PNG" if i % 2 else "JPEG"
            _image(root / name / f"{i}.{fmt.lower()}", 30 + i, 50 - i, seed=10 * c + i, fmt=fmt)
    _image(root / "stray.png", 8, 8, seed=0)
    (root / "README.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {
        "manifest": write_manifest(root / "pets"),
        "coco": write_coco(root / "coco"),
        "idx": write_idx(root / "idx"),
        "image_folder": write_image_folder(root / "shapes"),
    }


def _files_config(fmt, sources, **fields):
    config = _few_steps(importlib.import_module(f"configs.files_{fmt}").get_config("tiny"))
    config.data.source.path = str(sources[fmt])
    if fmt == "coco":
        config.data.source.images = str(sources[fmt].parent / "images")
    if fmt == "manifest":
        config.data.modalities = ("image", "text", "audio")
        config.data.audio_length = 256
        config.model.modalities = ("image", "text", "audio")
        config.model.encoder_kwargs = {"audio": {"frame_length": 64, "hop_length": 32}}
    for key, value in fields.items():
        config.data[key] = value
    # evaluate_checkpoint passes no MetricWriter, which reconstruction_images needs.
    config.evaluators = ()
    return config


@pytest.mark.parametrize("fmt", ["manifest", "coco", "idx", "image_folder"])
def test_file_formats_convert_train_and_evaluate(fmt, sources, tmp_path):
    config = _files_config(fmt, sources)
    metrics = train_lib.train_and_evaluate(config, str(tmp_path))["test"]
    step, again = runs.evaluate_checkpoint(str(tmp_path))
    assert step == 2 and again["num_examples"] == metrics["num_examples"] > 0
    assert np.isfinite(again["loss"])
    p = DataPipeline(config.data, batch_size=8, seed=0, vocab_path=tmp_path / "vocab.json")
    expected = {"manifest": (32, 32, 3), "coco": (32, 32, 3), "idx": (28, 28, 1),
                "image_folder": (64, 64, 3)}  # fmt: skip
    assert p.spec.image_shape == expected[fmt]
    if fmt == "manifest":
        assert p.spec.sample_rate == 8000 and p.spec.num_classes == 2
    if fmt == "image_folder":
        assert p.info.features["label"].names == ["circle", "square", "triangle"]


def test_bad_rows_are_skipped_with_one_warning(sources, tmp_path, caplog):
    config = _files_config("manifest", sources, data_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="crossjax.data.files"):
        p = DataPipeline(config.data, batch_size=8, seed=0, vocab_path=None)
    warnings = [r for r in caplog.records if r.name == "crossjax.data.files"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert "Skipped 3 of 24 rows" in message and "line 4: missing file" in message
    assert "line 6: cannot decode image" in message and "line 8: empty caption" in message
    assert sum(p.num_examples.values()) == 21 and p.num_train == p.num_examples["train"]


def test_every_row_bad_is_an_error(tmp_path):
    (tmp_path / "m.csv").write_text("image,label\nnope1.png,a\nnope2.png,b\nnope3.png,a\n")
    data = _data("files", data_dir=str(tmp_path / "data"), image_size=(8, 8))
    data.source.format, data.source.path = "manifest", str(tmp_path / "m.csv")
    with pytest.raises(CrossjaxError, match="every row of .* is bad.*missing file"):
        DataPipeline(data, batch_size=1, seed=0, vocab_path=None)


def test_source_errors_name_the_problem(tmp_path, sources):
    data = _data("files")
    data.source.format = "parquet"
    with pytest.raises(
        ConfigError, match="format=.parquet.; valid: manifest, coco, idx, image_folder, audio_folder"
    ):
        DataPipeline(data, batch_size=8, seed=0, vocab_path=None)
    data.source.format, data.source.path = "manifest", str(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="nope.jsonl does not exist"):
        DataPipeline(data, batch_size=8, seed=0, vocab_path=None)
    _wav(tmp_path / "a.wav", 100, rate=8000)
    _wav(tmp_path / "b.wav", 100, rate=16000)
    (tmp_path / "m.csv").write_text("audio,label\na.wav,x\nb.wav,y\na.wav,x\nb.wav,y\n")
    data.source.path = str(tmp_path / "m.csv")
    with pytest.raises(CrossjaxError, match="b.wav is sampled at 16000 Hz but .*a.wav at 8000"):
        DataPipeline(
            _data("files", ("audio",), source=data.source), batch_size=1, seed=0, vocab_path=None
        )


def test_conversion_is_reused_until_the_source_or_an_option_changes(tmp_path):
    root = write_image_folder(tmp_path / "src", per_class=3)
    data = _data("files", data_dir=str(tmp_path / "data"), image_size=(8, 8))
    data.source.format, data.source.path = "image_folder", str(root)
    converted = tmp_path / "data" / "crossjax_files"
    load = lambda: DataPipeline(data, batch_size=1, seed=0, vocab_path=None)  # noqa: E731
    load(), load()
    assert len(list(converted.iterdir())) == 1
    data.image_size = (6, 6)
    assert load().spec.image_shape == (6, 6, 3) and len(list(converted.iterdir())) == 2
    _image(root / "circle" / "0.jpeg", 12, 12, seed=99, fmt="JPEG")  # a changed file
    load()
    assert len(list(converted.iterdir())) == 3


def test_training_draws_one_caption_per_example_and_epoch(sources, tmp_path):
    data = _data("files", ("image", "text"), label_key="", image_size=(8, 8), all_captions=6)
    data.source.format, data.source.path = "coco", str(sources["coco"])
    data.source.images, data.vocab_min_count = str(sources["coco"].parent / "images"), 1
    make = lambda: DataPipeline(data, batch_size=8, seed=5, vocab_path=tmp_path / "v.json")  # noqa: E731
    p = make()
    epochs = 3 * p.num_train // 8
    runs = [
        [next(it) for _ in range(epochs)] for it in (p.train_iterator(), make().train_iterator())
    ]
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a["text"], b["text"])  # deterministic given the seed
    picks = {}
    for batch in runs[0]:
        for text, captions in zip(batch["text"], batch["captions"], strict=True):
            assert any(np.array_equal(text, c) for c in captions)  # one of its own captions
            picks.setdefault(captions.tobytes(), set()).add(text.tobytes())
    assert max(len(s) for s in picks.values()) > 1  # different captions across epochs
    batch = next(p.eval_batches(8))
    np.testing.assert_array_equal(batch["text"], batch["captions"][:, 0])
    assert batch["captions"].shape == (8, 6, 16)
    assert not batch["captions_mask"][:, 5].any(axis=-1).all()  # 3-5 captions: padded


def test_image_folder_train_and_test_folders_give_the_split(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        write_image_folder(tmp_path / split, per_class=n)
    table = folder_formats.read_image_folder(str(tmp_path), test_fraction=0.5, split_seed=0)
    assert len(table.splits["train"]) == 12 and len(table.splits["test"]) == 6
    assert table.label_names == ["circle", "square", "triangle"]


def test_holdout_is_seeded_and_per_label():
    labels = ["a"] * 10 + ["b"] * 4
    test = file_formats.holdout(labels, 0.2, seed=1)
    assert test[:10].sum() == 2 and test[10:].sum() == 1
    np.testing.assert_array_equal(test, file_formats.holdout(labels, 0.2, seed=1))
    assert not np.array_equal(test, file_formats.holdout(labels, 0.2, seed=2))


def test_fit_image_resizes_the_shorter_side_then_centre_crops():
    image = np.zeros((10, 40), np.uint8)
    image[:, 12:28] = 255  # a bright centre band: 16 of 40 columns
    fitted = fit_image_array(image, (5, 5), "L")
    assert fitted.shape == (5, 5, 1) and fitted.min() > 200  # the crop is the centre
    assert fit_image_array(image, (5, 5), "RGB").shape == (5, 5, 3)
