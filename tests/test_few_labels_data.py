"""Few labels and unpaired data in the pipeline: `present/label`, labelled batches, weak
pairing (crossjax.data.labels, crossjax.data.batches.LabeledBatchIndices)."""

import numpy as np
import pytest

from crossjax.config import base_config
from crossjax.data.labels import labeled_subset, weak_pairing
from crossjax.data.pipeline import DataPipeline
from crossjax.errors import ConfigError


def _data_config(modalities=("image", "text", "audio"), **fields):
    config = base_config().data
    config.name = "crossjax_digits/tiny"
    config.modalities = modalities
    for key, value in fields.items():
        config[key] = value
    return config


def _pipeline(tmp_path, seed=3, batch_size=16, **fields):
    return DataPipeline(
        _data_config(**fields), batch_size=batch_size, seed=seed, vocab_path=tmp_path / "v.json"
    )


def _true_labels(data):
    source = data.sources["train"]
    return np.asarray([int(source[int(i)]["label"]) for i in data.row_indices["train"]])


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """432 training examples of which 20 (2 per class) keep their label; 4 per batch."""
    path = tmp_path_factory.mktemp("labels")
    return _pipeline(path, num_labels=20, labeled_batch_size=4)


def test_labeled_subset_is_balanced_seeded_and_exact():
    labels = np.random.default_rng(0).integers(10, size=1000)
    mask = labeled_subset(labels, 10, seed=1, num_labels=100)
    assert mask.sum() == 100 and (np.bincount(labels[mask], minlength=10) == 10).all()
    np.testing.assert_array_equal(mask, labeled_subset(labels, 10, seed=1, num_labels=100))
    assert not np.array_equal(mask, labeled_subset(labels, 10, seed=2, num_labels=100))
    by_fraction = labeled_subset(labels, 10, seed=1, fraction=0.25)
    assert by_fraction.sum() == 250
    share = np.bincount(labels[by_fraction], minlength=10) / np.bincount(labels, minlength=10)
    assert np.abs(share - 0.25).max() < 0.01  # stratified


def test_labels_come_from_the_training_part_only_and_ignore_the_run_seed(labelled, tmp_path):
    present = labelled.presence["present/label"]
    assert present.shape == (labelled.num_train,) and present.sum() == 20
    truth = _true_labels(labelled)
    assert (np.bincount(truth[present], minlength=10) == 2).all()
    chosen = labelled.row_indices["train"][present]
    assert not np.isin(chosen, labelled.row_indices["validation"]).any()  # test: other split
    other_run = _pipeline(tmp_path, seed=11, num_labels=20, labeled_batch_size=4)
    np.testing.assert_array_equal(other_run.presence["present/label"], present)
    other_draw = _pipeline(tmp_path, num_labels=20, label_seed=1)
    assert not np.array_equal(other_draw.presence["present/label"], present)


def test_every_batch_holds_the_labelled_count_and_hides_other_labels(labelled):
    truth = _true_labels(labelled)
    indices = labelled._batch_indices()
    it = labelled.train_iterator()
    seen = []
    for j in range(10):  # 10 batches: the 20 labelled examples twice (an epoch per 5)
        batch, positions = next(it), indices(j)
        present = batch["present/label"]
        assert present.dtype == bool and present[:4].all() and not present[4:].any()
        np.testing.assert_array_equal(batch["label"][:4], truth[positions[:4]])
        assert not batch["label"][4:].any()  # unlabelled rows carry 0, not their label
        seen.append(positions[:4])
    counts = np.bincount(np.concatenate(seen), minlength=labelled.num_train)
    assert set(counts[labelled.presence["present/label"]]) == {2}
    assert not next(labelled.eval_batches()).get("present/label", np.zeros(1)).any()
    assert "present/label" in labelled.batch_keys("train")
    assert "present/label" not in labelled.batch_keys("validation")


def test_labelled_batches_resume_exactly_on_host_and_devices(labelled):
    from crossjax.sharding import make_mesh, to_host

    it = labelled.train_iterator()
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(12)]
    resumed = labelled.train_iterator(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    mesh = make_mesh(8)
    device = labelled.global_train_batches(mesh, state)  # the cached, on-device path
    for want in expected:
        got = next(device)
        assert got["label"].sharding.spec[0] == "data"
        for key in want:
            np.testing.assert_array_equal(to_host(got[key]), want[key])


def test_labeled_fraction_and_all_labelled_default(tmp_path):
    data = _pipeline(tmp_path, labeled_fraction=0.25)
    assert data.presence["present/label"].sum() == round(0.25 * data.num_train)
    plain = _pipeline(tmp_path)
    assert plain.presence is None and "present/label" not in next(plain.train_iterator())


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"num_labels": 20, "labeled_fraction": 0.5}, "both set"),
        ({"num_labels": 25}, "not a multiple of the 10 classes"),
        ({"num_labels": 1000}, "choose at most"),
        ({"num_labels": 20, "label_key": ""}, "need a label feature"),
        ({"labeled_fraction": 1.5}, "labeled_fraction"),
        ({"labeled_batch_size": 4}, "needs partly labelled data"),
        ({"num_labels": 20, "labeled_batch_size": 17}, "labeled_batch_size=17"),
        ({"paired_fraction": 0.5, "missing_fraction": 0.2}, "both drop modalities"),
        ({"paired_fraction": 0.5, "modalities": ("image",)}, "at least two"),
        ({"paired_fraction": -0.1}, "paired_fraction"),
        ({"paired_fraction": 0.5, "paired_batch_size": 16}, "paired_batch_size=16"),
        (
            {
                "paired_fraction": 0.5,
                "paired_batch_size": 4,
                "num_labels": 20,
                "labeled_batch_size": 4,
            },
            "both fix a batch's make-up",
        ),
    ],
)
def test_label_and_pairing_errors_name_the_fix(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        _pipeline(tmp_path, **fields)


def test_weak_pairing_counts():
    positions, table = weak_pairing(10, ("image", "audio"), 0.3, seed=0)
    assert len(positions) == 3 + 7 * 2
    present = np.stack([table["present/image"], table["present/audio"]], 1)
    whole = present.all(1)
    assert whole.sum() == 3 and (present.sum(1)[~whole] == 1).all()
    for p in range(10):  # an unpaired example: once with each modality alone
        rows = present[positions == p]
        assert len(rows) in (1, 2) and (rows.all() if len(rows) == 1 else (rows.sum(0) == 1).all())


def test_paired_fraction_in_the_pipeline_shares_label_state_between_copies(tmp_path):
    data = _pipeline(tmp_path, modalities=("image", "audio"), paired_fraction=0.25, num_labels=20)
    n = 432
    paired = round(0.25 * n)
    assert data.num_train == paired + 2 * (n - paired) == len(data.row_indices["train"])
    image, audio = data.presence["present/image"], data.presence["present/audio"]
    assert (image & audio).sum() == paired and (image ^ audio).sum() == 2 * (n - paired)
    labelled = data.presence["present/label"]
    by_source = {}
    for index, flag in zip(data.row_indices["train"], labelled, strict=True):
        by_source.setdefault(int(index), set()).add(bool(flag))
    assert all(len(flags) == 1 for flags in by_source.values())
    assert sum(flags == {True} for flags in by_source.values()) == 20
    batch = next(data.train_iterator())
    for m in ("image", "audio"):
        absent = ~batch[f"present/{m}"]
        assert not batch[m][absent].any()


def test_labeled_batch_indices_cycle_a_pool_smaller_than_the_labelled_part():
    from crossjax.data.batches import LabeledBatchIndices, ShuffledBatchIndices

    labeled, unlabeled = np.array([3, 7, 11]), np.arange(20, 40)
    indices = LabeledBatchIndices(labeled, unlabeled, 8, 6, seed=5)
    batches = np.stack([indices(j) for j in range(4)])  # 24 labelled draws: 8 passes
    assert np.isin(batches[:, :6], labeled).all() and np.isin(batches[:, 6:], unlabeled).all()
    assert set(np.unique(batches[:, :6], return_counts=True)[1]) == {8}
    np.testing.assert_array_equal(indices(2), LabeledBatchIndices(labeled, unlabeled, 8, 6, 5)(2))
    # The plain stream (stream 0) is unchanged: existing runs keep their batches.
    plain = ShuffledBatchIndices(10, 4, seed=0)
    np.testing.assert_array_equal(plain(0), np.random.default_rng([0, 0]).permutation(10)[:4])


def test_paired_batch_size_fixes_the_complete_examples_of_every_batch(tmp_path):
    data = _pipeline(
        tmp_path, modalities=("image", "audio"), paired_fraction=0.1, paired_batch_size=4
    )
    stream = data.train_iterator()
    for _ in range(3):
        batch = next(stream)
        complete = batch["present/image"] & batch["present/audio"]
        assert complete[:4].all() and not complete[4:].any()  # plain shuffle: ~1 in 16
    # Every example complete: nothing to balance, so the plain shuffle.
    assert _pipeline(tmp_path, paired_batch_size=4).paired_batch_size is None
