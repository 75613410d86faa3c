"""Tests of the embedded TFDS datasets crossjax_digits and crossjax_shapes (tiny configs)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from crossjax.data import digit_text, dtmf, shapes
from crossjax.data.digits import (
    AUDIO_SAMPLES,
    SAMPLE_RATE,
    CrossjaxDigits,
    DigitsConfig,
    degrade_digit_image,
    load_source_digits,
    split_sources,
)
from crossjax.data.shapes import (
    COLORS,
    RELATIONS,
    SHAPES,
    SIZES,
    CrossjaxShapes,
    ShapesConfig,
    caption_scene,
    parse_caption,
    render_scene,
    sample_scene,
)

ATTRIBUTE_KEYS = ("color", "shape", "size")


def _prepare(data_dir) -> None:
    for builder_class in (CrossjaxDigits, CrossjaxShapes):
        builder = builder_class(config="tiny", data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    _prepare(path)
    return path


@pytest.fixture(scope="module")
def digits_records(data_dir) -> dict[str, list[dict]]:
    source = tfds.data_source("crossjax_digits/tiny", data_dir=data_dir)
    return {split: [source[split][i] for i in range(len(source[split]))] for split in source}


@pytest.fixture(scope="module")
def shapes_records(data_dir) -> dict[str, list[dict]]:
    builder = CrossjaxShapes(config="tiny", data_dir=data_dir)
    source = builder.as_data_source()
    return {split: [source[split][i] for i in range(len(source[split]))] for split in source}


def _assert_records_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------------------- digits


def test_digits_splits_have_configured_sizes(digits_records):
    cfg = CrossjaxDigits.builder_configs["tiny"]
    _, labels = load_source_digits()
    ids = split_sources(
        labels, seed=cfg.seed, test_fraction=cfg.test_fraction, max_sources=cfg.max_sources
    )
    assert len(digits_records["train"]) == len(ids["train"]) * cfg.train_draws
    assert len(digits_records["test"]) == len(ids["test"]) * cfg.test_draws
    assert 250 <= len(ids["train"]) + len(ids["test"]) <= 350


def test_digits_features_have_documented_shapes_and_ranges(digits_records):
    for records in digits_records.values():
        for record in records:
            image, audio = record["image"], record["audio"]
            assert image.shape == (8, 8, 1) and image.dtype == np.float32
            assert 0.0 <= image.min() and image.max() <= 1.0
            assert audio.shape == (AUDIO_SAMPLES,) and audio.dtype == np.float32
            assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0
            text = record["text"].decode()
            assert re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", text), text
            assert len(text.split()) <= digit_text.MAX_WORDS
            assert 0 <= record["label"] < 10


def test_digits_labels_match_source_images(digits_records):
    images, labels = load_source_digits()
    for records in digits_records.values():
        for record in records:
            assert record["label"] == labels[record["source_id"]]
    # The first draw of a source image still resembles the clean image.
    record = digits_records["train"][0]
    clean = images[record["source_id"]].reshape(-1)
    assert np.corrcoef(clean, record["image"].reshape(-1))[0, 1] > 0.3


def test_digits_train_test_disjoint_by_source_and_all_labels(digits_records):
    train_ids = {r["source_id"] for r in digits_records["train"]}
    test_ids = {r["source_id"] for r in digits_records["test"]}
    assert not train_ids & test_ids
    for records in digits_records.values():
        assert {r["label"] for r in records} == set(range(10))


def test_split_sources_is_stratified_and_covers_everything():
    _, labels = load_source_digits()
    ids = split_sources(labels, seed=3, test_fraction=0.2)
    assert not set(ids["train"]) & set(ids["test"])
    assert len(ids["train"]) + len(ids["test"]) == len(labels)
    for label in range(10):
        test_share = np.sum(labels[ids["test"]] == label) / np.sum(labels == label)
        assert abs(test_share - 0.2) < 0.01
    other = split_sources(labels, seed=4, test_fraction=0.2)
    assert not np.array_equal(ids["test"], other["test"])


def test_degrade_digit_image_is_seeded_noisy_and_bounded():
    images, _ = load_source_digits()
    a = degrade_digit_image(np.random.default_rng(1), images[0])
    b = degrade_digit_image(np.random.default_rng(1), images[0])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (8, 8, 1) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert not np.allclose(a[..., 0], images[0])


def test_clean_views_keep_the_source_image_and_name_the_digit():
    from crossjax.data.digits import CrossjaxDigits, make_digit_example

    images, labels = load_source_digits()
    for i in range(20):
        ex = make_digit_example(np.random.default_rng(i), images[i], int(labels[i]), i, True)
        np.testing.assert_array_equal(ex["image"][..., 0], images[i])
        words = ex["text"].split()
        assert digit_text.NUMBER_WORDS[labels[i]] in words or str(labels[i]) in words
        assert ex["audio"].shape == (dtmf.AUDIO_SAMPLES,)
    clean = {c.name: c for c in CrossjaxDigits.BUILDER_CONFIGS}["clean"]
    assert clean.clean_views and clean.train_draws == 8


def test_clean_dtmf_has_peaks_at_the_digit_frequencies():
    freqs = np.fft.rfftfreq(AUDIO_SAMPLES, 1 / SAMPLE_RATE)
    for label in range(10):
        wave = dtmf.synthesize_dtmf(np.random.default_rng(label), label, noisy=False)
        assert wave.shape == (AUDIO_SAMPLES,) and wave.dtype == np.float32
        spectrum = np.abs(np.fft.rfft(wave * np.hanning(AUDIO_SAMPLES)))
        peaks = sorted(freqs[np.argsort(spectrum)[-2:]])
        np.testing.assert_allclose(peaks, dtmf.dtmf_frequencies(label), atol=5.0)
    assert dtmf.dtmf_frequencies(0) == (941.0, 1336.0)
    assert dtmf.dtmf_frequencies(7) == (852.0, 1209.0)


def test_noisy_dtmf_usually_keeps_the_strongest_keypad_tones():
    freqs = np.fft.rfftfreq(AUDIO_SAMPLES, 1 / SAMPLE_RATE)

    def band_energy(spectrum, hz):
        return spectrum[np.abs(freqs - hz) < 30].sum()

    correct, trials = 0, 200
    for i in range(trials):
        label = i % 10
        wave = dtmf.synthesize_dtmf(np.random.default_rng(i), label)
        assert np.max(np.abs(wave)) <= 1.0
        spectrum = np.abs(np.fft.rfft(wave)) ** 2
        row = max(dtmf.ROW_HZ, key=lambda hz: band_energy(spectrum, hz))
        col = max(dtmf.COL_HZ, key=lambda hz: band_energy(spectrum, hz))
        correct += (row, col) == dtmf.dtmf_frequencies(label)
    assert 0.6 < correct / trials < 1.0  # noisy, but mostly decodable


def test_clean_descriptions_name_exactly_the_digit():
    rng = np.random.default_rng(0)
    for label in range(10):
        for _ in range(30):
            words = digit_text.describe_digit(rng, label, noisy=False).split()
            named = {d for d in range(10) if str(d) in words or digit_text.NUMBER_WORDS[d] in words}
            assert named == {label}, words


def test_noisy_descriptions_are_short_lowercase_and_truthful():
    rng = np.random.default_rng(1)
    texts = set()
    for i in range(3000):
        label = i % 10
        text = digit_text.describe_digit(rng, label)
        texts.add(text)
        words = text.split()
        assert 1 <= len(words) <= digit_text.MAX_WORDS and text == text.lower()
        # Partial information is never false: parity and primality words fit the label.
        if "odd" in words:
            assert label % 2 == 1
        if "even" in words:
            assert label % 2 == 0
        if "prime" in words and "not" not in words:
            assert label in (2, 3, 5, 7)
        # Another digit is only ever named inside a comparison, negation or alternative.
        named = {d for d in range(10) if str(d) in words or digit_text.NUMBER_WORDS[d] in words}
        if named - {label}:
            assert set(words) & set(digit_text._PROTECTED), text
    assert len(texts) > 1000  # varied


# ----------------------------------------------------------------------------- shapes


def test_shapes_features_have_documented_shapes_and_ranges(shapes_records):
    cfg = CrossjaxShapes.builder_configs["tiny"]
    assert len(shapes_records["train"]) == cfg.num_train
    assert len(shapes_records["test"]) == cfg.num_test
    vocab_sizes = {"color": len(COLORS), "shape": len(SHAPES), "size": len(SIZES)}
    num_objects = []
    for records in shapes_records.values():
        for record in records:
            assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
            n = int(record["num_objects"])
            num_objects.append(n)
            assert n in (1, 2)
            for key, size in vocab_sizes.items():
                value = record[key]
                assert value.shape == (2,) and value.dtype == np.int32
                assert np.all((0 <= value[:n]) & (value[:n] < size))
                assert np.all(value[n:] == -1)
            assert record["relation"] == -1 if n == 1 else record["relation"] in (0, 2)
            assert record["label"] == record["shape"][0]
    assert 0.35 < np.mean(np.array(num_objects) == 2) < 0.65
    labels = {r["label"] for r in shapes_records["train"]}
    assert labels == set(range(len(SHAPES)))


def test_parse_caption_recovers_the_stored_attributes(shapes_records):
    for records in shapes_records.values():
        for record in records:
            parsed = parse_caption(record["text"])
            assert parsed["num_objects"] == record["num_objects"], record["text"]
            assert parsed["relation"] == record["relation"], record["text"]
            for key in ATTRIBUTE_KEYS:
                np.testing.assert_array_equal(parsed[key], record[key], err_msg=record["text"])


def test_parse_caption_inverts_the_caption_generator_on_random_scenes():
    rng = np.random.default_rng(0)
    stated = set()
    for _ in range(500):
        scene = sample_scene(rng)
        caption = caption_scene(rng, scene)
        stated.update(w for w in ("left", "right", "above", "below", "under") if w in caption)
        parsed = parse_caption(caption)
        assert parsed["num_objects"] == scene["num_objects"], caption
        assert parsed["relation"] == scene["relation"], caption
        for key in ATTRIBUTE_KEYS:
            np.testing.assert_array_equal(parsed[key], scene[key], err_msg=caption)
    assert stated == {"left", "right", "above", "below", "under"}  # both ways round


def test_parse_caption_handles_synonyms_inversions_and_garbage():
    parsed = parse_caption("there is a big blue box to the right of a tiny red disc")
    assert parsed["num_objects"] == 2 and RELATIONS[parsed["relation"]] == "left of"
    assert [COLORS[c] for c in parsed["color"]] == ["red", "blue"]
    assert [SHAPES[s] for s in parsed["shape"]] == ["circle", "square"]
    assert [SIZES[s] for s in parsed["size"]] == ["small", "large"]
    parsed = parse_caption(b"under a green plus is a little white rhombus")
    assert RELATIONS[parsed["relation"]] == "above"
    assert [SHAPES[s] for s in parsed["shape"]] == ["cross", "diamond"]
    parsed = parse_caption("a green triangle")
    assert parsed["num_objects"] == 1 and parsed["relation"] == -1
    assert (parsed["color"][0], parsed["shape"][0], parsed["size"][0]) == (1, 2, -1)
    parsed = parse_caption("nothing to see here")
    assert parsed["num_objects"] == 0 and parsed["relation"] == -1
    assert np.all(parsed["shape"] == -1)


def test_relation_is_geometrically_true_in_the_rendered_pixels():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        scene = sample_scene(rng, two_object_prob=1.0)
        seen.add(scene["relation"])
        cover = [
            shapes._coverage(
                int(scene["shape"][i]), shapes.RADIUS[scene["size"][i]], scene["centers"][i]
            )
            for i in range(2)
        ]
        assert np.all(cover[0] * cover[1] == 0), "objects overlap"
        ys, xs = np.mgrid[0:32, 0:32]
        axis = xs if RELATIONS[scene["relation"]] == "left of" else ys
        other = ys if axis is xs else xs
        # Every pixel of object 0 lies before every pixel of object 1 along the axis,
        # and the centroids are further apart along it than across it.
        assert axis[cover[0] > 0].max() < axis[cover[1] > 0].min()
        centroid = [(np.sum(axis * c) / c.sum(), np.sum(other * c) / c.sum()) for c in cover]
        along = centroid[1][0] - centroid[0][0]
        assert abs(centroid[1][1] - centroid[0][1]) < along
    assert seen == {0, 2}


def test_render_scene_is_seeded_and_draws_the_objects():
    image_a, scene_a = render_scene(np.random.default_rng(5), two_object_prob=0.0)
    image_b, _ = render_scene(np.random.default_rng(5), two_object_prob=0.0)
    np.testing.assert_array_equal(image_a, image_b)
    assert scene_a["num_objects"] == 1
    # The object's colour dominates the pixel at its centre.
    x, y = scene_a["centers"][0].astype(int)
    expected = shapes.COLOR_RGB[scene_a["color"][0]]
    assert np.max(np.abs(image_a[y, x].astype(float) - expected)) <= shapes.COLOR_JITTER + 1


def test_custom_config_object_is_accepted(tmp_path):
    builder = CrossjaxShapes(
        config=ShapesConfig(name="n40", num_train=40, num_test=8, two_object_prob=1.0),
        data_dir=tmp_path,
        file_format="array_record",
    )
    builder.download_and_prepare()
    source = builder.as_data_source()
    assert (len(source["train"]), len(source["test"])) == (40, 8)
    assert all(source["train"][i]["num_objects"] == 2 for i in range(40))
    digits_builder = CrossjaxDigits(
        config=DigitsConfig(name="d50", max_sources=50, train_draws=1, test_draws=1),
        data_dir=tmp_path,
        file_format="array_record",
    )
    digits_builder.download_and_prepare()
    assert len(digits_builder.as_data_source()["test"]) == 10


# ----------------------------------------------------------------------------- both


def test_preparing_twice_gives_identical_examples(digits_records, shapes_records, tmp_path):
    _prepare(tmp_path)
    for name, records in (("crossjax_digits", digits_records), ("crossjax_shapes", shapes_records)):
        again = tfds.data_source(f"{name}/tiny", data_dir=tmp_path)
        for split in ("train", "test"):
            for i in (0, 1, len(records[split]) - 1):
                _assert_records_equal(records[split][i], again[split][i])


def test_processes_sharing_a_data_dir_prepare_it_once(digits_records, tmp_path):
    # Test workers (and the processes of one host) share the default data_dir: whoever comes
    # second waits for the first one's lock instead of racing TFDS's temporary folder.
    import threading

    from crossjax.data.tfds_source import load_split_sources

    results, errors = [], []

    def load():
        try:
            sources, _ = load_split_sources("crossjax_digits/tiny", str(tmp_path), ["test"])
            results.append(sources["test"][0])
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for record in results:
        _assert_records_equal(record, digits_records["test"][0])
