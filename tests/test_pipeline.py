"""The input pipeline: Batch contract, determinism, exact resume, full eval pass, catalog data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from crossjax.config import base_config
from crossjax.data.pipeline import DataPipeline
from crossjax.data.text import Vocabulary
from crossjax.errors import ConfigError


def _data_config(name="crossjax_digits/tiny", modalities=("image", "text", "audio")):
    config = base_config().data
    config.name = name
    config.modalities = modalities
    return config


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    vocab_path = tmp_path_factory.mktemp("run") / "vocab.json"
    return DataPipeline(_data_config(), batch_size=16, seed=3, vocab_path=vocab_path)


def test_batches_follow_the_contract(pipeline):
    batch = next(pipeline.train_iterator())
    assert batch["image"].shape == (16, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["text"].shape == (16, 16) and batch["text"].dtype == np.int32
    assert batch["text_mask"].dtype == bool and batch["text_mask"].any(axis=1).all()
    assert batch["audio"].shape == (16, 2000) and batch["audio"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert pipeline.spec.num_classes == 10 and pipeline.spec.sample_rate == 8000
    assert pipeline.spec.vocab_size == len(pipeline.vocab)


def test_same_seed_same_batches_other_seed_differs(pipeline, tmp_path):
    again = DataPipeline(_data_config(), batch_size=16, seed=3, vocab_path=tmp_path / "v.json")
    other = DataPipeline(_data_config(), batch_size=16, seed=4, vocab_path=tmp_path / "v.json")
    a, b, c = (next(p.train_iterator())["label"] for p in (pipeline, again, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_iterator_state_resumes_exactly(pipeline):
    it = pipeline.train_iterator()
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(40)]  # crosses an epoch boundary (480 / 16 = 30)
    resumed = pipeline.train_iterator(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def _image_keys(images) -> set[bytes]:
    return {np.asarray(im, np.float32).reshape(-1).tobytes() for im in images}


def test_epoch_visits_every_training_example_once_and_no_validation_example(pipeline):
    it = pipeline.train_iterator()
    steps = pipeline.num_train // 16  # 432 of the 480 (48 held out)
    images = np.concatenate([next(it)["image"] for _ in range(steps * 3)])  # three epochs
    source = pipeline.sources["train"]
    train = _image_keys(source[int(i)]["image"] for i in pipeline.row_indices["train"])
    held = _image_keys(source[int(i)]["image"] for i in pipeline.row_indices["validation"])
    seen = _image_keys(images)
    assert seen == train and not seen & held and len(held) > 40


@pytest.mark.parametrize("split", ["validation", "test"])
def test_eval_pass_covers_each_example_once_with_padding(pipeline, split):
    batches = list(pipeline.eval_batches(batch_size=32, split=split))
    valid = np.concatenate([b["valid"] for b in batches])
    n = pipeline.num_examples[split]
    assert valid.sum() == n and len(valid) == 32 * len(batches) and not valid[n:].any()
    labels = np.concatenate([b["label"][b["valid"]] for b in batches])
    source = pipeline.sources["train" if split == "validation" else "test"]
    rows = pipeline.row_indices[split]
    np.testing.assert_array_equal(labels, [source[int(i)]["label"] for i in rows])


def test_vocabulary_is_stored_with_the_run_and_reloaded(pipeline, tmp_path):
    path = tmp_path / "vocab.json"
    built = DataPipeline(_data_config(), batch_size=16, seed=0, vocab_path=path)
    assert path.exists()
    assert Vocabulary.load(path).words == built.vocab.words == pipeline.vocab.words
    ids, mask = built.vocab.encode("the digit seven qqqzzz", 6)
    assert ids[3] == 1 and mask.tolist() == [True] * 4 + [False] * 2  # unknown word -> 1


def test_modality_the_dataset_lacks_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="has no modality 'audio'"):
        DataPipeline(
            _data_config("crossjax_shapes/tiny", ("image", "audio")),
            batch_size=8,
            seed=0,
            vocab_path=None,
        )


def test_unknown_dataset_lists_embedded_ones():
    with pytest.raises(ConfigError, match="unknown dataset 'no_such_set'.*crossjax_digits"):
        DataPipeline(_data_config("no_such_set", ("image",)), batch_size=8, seed=0, vocab_path=None)


def test_catalog_dataset_by_name_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        p = DataPipeline(_data_config("mnist", ("image",)), batch_size=8, seed=0, vocab_path=None)
        batch = next(p.train_iterator())
    assert p.spec.image_shape == (28, 28, 1) and p.spec.num_classes == 10
    assert batch["image"].dtype == np.float32 and batch["image"].max() <= 1.0
    assert batch["label"].shape == (8,)


def test_extra_features_pass_through_as_attributes(tmp_path):
    config = _data_config("crossjax_shapes/tiny", ("image", "text"))
    config.extra_features = ("color", "shape", "num_objects")
    p = DataPipeline(config, batch_size=8, seed=0, vocab_path=tmp_path / "v.json")
    batch = next(p.train_iterator())
    assert batch["attr/color"].shape == (8, 2) and batch["attr/color"].dtype == np.int32
    assert batch["attr/num_objects"].shape == (8,)
    np.testing.assert_array_equal(
        batch["label"], batch["attr/shape"][:, 0]
    )  # label = shape of object 0
    config.extra_features = ("smell",)
    with pytest.raises(ConfigError, match="extra_features names 'smell'"):
        DataPipeline(config, batch_size=8, seed=0, vocab_path=tmp_path / "v.json")


def test_memory_cache_gives_the_same_batches_as_reading_the_source(tmp_path):
    batches = {}
    for mode in ("never", "always"):
        config = _data_config()
        config.cache = mode
        p = DataPipeline(config, batch_size=16, seed=5, vocab_path=tmp_path / "v.json")
        it = p.train_iterator()
        assert (p.rows("train").arrays is not None) == (mode == "always")
        batches[mode] = [next(it) for _ in range(35)] + list(p.eval_batches(batch_size=48))
    for uncached, cached in zip(batches["never"], batches["always"], strict=True):
        assert uncached.keys() == cached.keys()
        for key in uncached:
            np.testing.assert_array_equal(uncached[key], cached[key])
            assert uncached[key].dtype == cached[key].dtype


def test_device_resident_batches_equal_host_batches_and_resume(pipeline):
    from crossjax.data.batches import DeviceGather, GlobalBatches
    from crossjax.sharding import make_mesh, to_global, to_host

    mesh = make_mesh(8)
    device = pipeline.global_train_batches(mesh)
    assert isinstance(device._place, DeviceGather)  # tiny digits are cached in memory
    host = GlobalBatches(pipeline.train_iterator(), lambda b: to_global(b, mesh))
    for _ in range(30):  # crosses an epoch boundary (27 batches)
        want, got = next(host), next(device)
        assert got["image"].sharding.spec == want["image"].sharding.spec
        for key in want:
            np.testing.assert_array_equal(to_host(got[key]), to_host(want[key]))
    resumed = pipeline.global_train_batches(mesh, device.get_state())
    np.testing.assert_array_equal(to_host(next(resumed)["label"]), to_host(next(device)["label"]))


@pytest.mark.parametrize("cache", ["always", "never"])
def test_missing_fraction_removes_one_modality_per_chosen_example(tmp_path, cache):
    config = _data_config()
    config.cache = cache
    config.missing_fraction = 0.5
    data = DataPipeline(config, batch_size=16, seed=3, vocab_path=tmp_path / "v.json")
    present = np.stack([data.presence[f"present/{m}"] for m in ("image", "text", "audio")], 1)
    missing = (~present).sum(axis=1)
    assert missing.max() == 1  # never more than one modality lost
    assert missing.sum() == round(0.5 * data.num_train)
    assert (~present).sum(axis=0).min() > 0.25 * missing.sum()  # each modality is dropped
    batch = next(data.train_iterator())
    for m in ("image", "audio"):
        absent = ~batch[f"present/{m}"]
        kept = batch[m][~absent].reshape((~absent).sum(), -1)
        assert not batch[m][absent].any() and kept.any(axis=1).all()
    absent = ~batch["present/text"]
    assert not batch["text_mask"][absent].any() and not batch["text"][absent].any()
    assert "present/image" not in next(data.eval_batches())  # the eval split stays complete
    again = DataPipeline(config, batch_size=16, seed=9, vocab_path=tmp_path / "v.json")
    for key, value in data.presence.items():  # fixed by missing_seed, not the run's seed
        np.testing.assert_array_equal(again.presence[key], value)


def test_missing_fraction_errors(tmp_path):
    config = _data_config(modalities=("image",))
    config.missing_fraction = 0.5
    with pytest.raises(ConfigError, match="at least two"):
        DataPipeline(config, batch_size=16, seed=0, vocab_path=tmp_path / "v.json")
    config = _data_config()
    config.missing_fraction = 1.5
    with pytest.raises(ConfigError, match="missing_fraction"):
        DataPipeline(config, batch_size=16, seed=0, vocab_path=tmp_path / "v.json")
    config.missing_fraction = 0.5
    config.missing_modalities = ("depth",)
    with pytest.raises(ConfigError, match="depth"):
        DataPipeline(config, batch_size=16, seed=0, vocab_path=tmp_path / "v.json")


def test_remove_absent_zeroes_every_view_of_an_absent_modality():
    from crossjax.data.pipeline import remove_absent

    ones = {
        "text": np.ones((2, 3), np.int32),
        "text_mask": np.ones((2, 3), bool),
        "captions": np.ones((2, 2, 3), np.int32),
        "captions_mask": np.ones((2, 2, 3), bool),
        "image": np.ones((2, 4, 4, 1), np.float32),
    }
    out = remove_absent(
        ones, {"present/text": np.array([True, False]), "present/image": np.array([False, True])}
    )
    for key in ("text", "text_mask", "captions", "captions_mask"):
        assert out[key][0].all() and not out[key][1].any()
    assert not out["image"][0].any() and out["image"][1].all()
    assert out["present/text"].tolist() == [True, False]
