"""crossjax.augment: shapes, determinism per key, identity settings, per-example draws."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossjax import augment as aug
from crossjax.errors import ConfigError

IMAGES = jax.random.uniform(jax.random.key(0), (6, 28, 28, 1))
WAVES = jax.random.normal(jax.random.key(1), (4, 800))
SPECTROGRAMS = jax.random.normal(jax.random.key(2), (4, 16, 20))
KEY = jax.random.key(7)


@pytest.mark.parametrize("strength", ["weak", "strong"])
def test_image_views_keep_shape_dtype_and_range(strength):
    out = aug.augment_image(KEY, IMAGES, aug.STRENGTHS[strength]["image"])
    assert out.shape == IMAGES.shape and out.dtype == IMAGES.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not np.allclose(out, IMAGES)


@pytest.mark.parametrize("audio", [WAVES, SPECTROGRAMS], ids=["waveform", "spectrogram"])
@pytest.mark.parametrize("strength", ["weak", "strong"])
def test_audio_views_keep_shape(audio, strength):
    out = aug.augment_audio(KEY, audio, aug.STRENGTHS[strength]["audio"])
    assert out.shape == audio.shape and out.dtype == audio.dtype
    assert not np.allclose(out, audio)


def test_identity_settings_give_the_input_back():
    np.testing.assert_array_equal(aug.augment_image(KEY, IMAGES, aug.ImageAugment()), IMAGES)
    np.testing.assert_array_equal(aug.augment_audio(KEY, WAVES, aug.AudioAugment()), WAVES)
    np.testing.assert_array_equal(
        aug.augment_audio(KEY, SPECTROGRAMS, aug.AudioAugment()), SPECTROGRAMS
    )


def test_same_key_same_views_other_key_other_views_and_jit_agrees():
    strong = aug.STRONG
    batch = {"image": IMAGES, "audio": jnp.tile(WAVES[:1], (6, 1)), "label": jnp.arange(6)}
    first = aug.augment_batch(KEY, batch, "strong")
    again = jax.jit(lambda k, b: aug.augment_batch(k, b, "strong"))(KEY, batch)
    other = aug.augment_batch(jax.random.key(8), batch, "strong")
    for m in ("image", "audio"):
        np.testing.assert_allclose(first[m], again[m], atol=1e-5)
        assert not np.allclose(first[m], other[m])
    np.testing.assert_array_equal(first["label"], batch["label"])  # other keys untouched
    # One draw per example: the six identical recordings come out different.
    assert len({np.asarray(a).tobytes() for a in first["audio"]}) == 6
    assert strong["image"].max_shift >= 1


def test_weak_shift_moves_a_dot_by_whole_pixels_within_the_bound():
    dot = jnp.zeros((64, 9, 9, 1)).at[:, 4, 4, 0].set(1.0)
    out = np.asarray(aug.augment_image(KEY, dot, aug.ImageAugment(max_shift=2)))
    moves = set()
    for image in out[..., 0]:
        ((row, col),) = np.argwhere(image)  # still one pixel, still exactly 1.0
        assert image[row, col] == 1.0 and abs(row - 4) <= 2 and abs(col - 4) <= 2
        moves.add((row - 4, col - 4))
    assert len(moves) > 5  # the shifts differ per example


def test_no_mirror_image_among_many_weak_views():
    # An asymmetric shape: a horizontal bar with a dot at its right end. A flip would
    # put the dot on the left of the bar.
    image = jnp.zeros((9, 9)).at[4, 2:6].set(0.5).at[4, 6].set(1.0)[None, ..., None]
    out = np.asarray(aug.augment_image(KEY, jnp.tile(image, (64, 1, 1, 1)), aug.WEAK["image"]))
    for view in out[..., 0]:
        ((row, col),) = np.argwhere(view == 1.0)
        assert view[row, col - 1] == 0.5  # the bar stays left of the dot


def test_time_shift_zero_fills_instead_of_wrapping():
    ramp = jnp.tile(jnp.arange(1.0, 101.0)[None], (16, 1))
    out = np.asarray(aug.augment_audio(KEY, ramp, aug.AudioAugment(max_shift=0.3)))
    for row in out:
        kept = row[row != 0]
        assert np.all(np.diff(kept) == 1.0)  # one contiguous piece of the ramp, not wrapped
        assert kept.size >= 70


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown augmentation 'medium'"):
        aug.resolve_settings("medium")
    with pytest.raises(ConfigError, match="no setting 'mirror'"):
        aug.resolve_settings({"image": {"mirror": True}})
    with pytest.raises(ConfigError, match="cannot augment modality 'text'"):
        aug.resolve_settings({"text": {}})
    with pytest.raises(ConfigError, match="waveforms"):
        aug.augment_audio(KEY, jnp.zeros((3,)), aug.AudioAugment())
    custom = aug.resolve_settings({"image": {"max_shift": 1}})
    assert custom == {"image": aug.ImageAugment(max_shift=1)}


def test_flip_mirrors_about_half_and_keeps_the_other_draws():
    shifted = aug.ImageAugment(max_shift=2)
    flipped = aug.ImageAugment(max_shift=2, flip=True)
    images = jax.random.uniform(jax.random.key(3), (32, 8, 8, 1))
    plain = np.asarray(aug.augment_image(KEY, images, shifted))
    out = np.asarray(aug.augment_image(KEY, images, flipped))
    mirrored = [np.array_equal(o, p[:, ::-1]) for o, p in zip(out, plain, strict=True)]
    kept = [np.array_equal(o, p) for o, p in zip(out, plain, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))  # the same shift each
    assert 8 <= sum(mirrored) <= 24  # about half of 32


def _tiny_experiment(augment_setting):
    from configs import digits_image
    from crossjax import train as train_lib
    from crossjax.data.pipeline import DataPipeline

    config = digits_image.get_config("tiny")
    config.model.dropout = 0.0
    config.data.augment = augment_setting
    data = DataPipeline(config.data, batch_size=config.batch_size, seed=0, vocab_path=None)
    return train_lib.Experiment(config, data, train_lib.make_mesh(config)), data


def test_trainer_augments_training_batches_with_its_documented_key():
    from crossjax import train as train_lib

    setting = {"image": {"max_shift": 1, "flip": True}}
    plain, data = _tiny_experiment(None)
    augmented, _ = _tiny_experiment(setting)
    batch = next(data.train_iterator())
    initial = jax.device_get(plain.init().params)
    want, got, clean = plain.init(), augmented.init(), plain.init()
    metrics = [e.empty_train_metrics() for e in (plain, augmented, plain)]
    for step in range(2):  # the first step's learning rate is 0 (warm-up)
        key = jax.random.fold_in(jax.random.key(plain.seed), step)
        by_hand = aug.augment_batch(
            jax.random.fold_in(key, train_lib.AUGMENT_STREAM), batch, setting
        )
        assert not np.allclose(by_hand["image"], batch["image"])
        want, metrics[0] = plain.train_step(want, by_hand, metrics[0])
        got, metrics[1] = augmented.train_step(got, batch, metrics[1])
        clean, metrics[2] = plain.train_step(clean, batch, metrics[2])
    chex.assert_trees_all_close(got.params, want.params, atol=1e-6)

    def largest_difference(a, b):
        return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)))

    assert largest_difference(got.params, initial) > 1e-4  # it trained
    assert largest_difference(got.params, clean.params) > 1e-4  # on other images than these


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"audio": {"gain_db": 3.0}}, "data.augment names 'audio', which this dataset does not"),
        ({"image": {"mirror": True}}, "data.augment: image augmentation has no setting 'mirror'"),
        ("medium", "data.augment: unknown augmentation 'medium'"),
    ],
)
def test_bad_training_augmentation_is_a_config_error(setting, message):
    from crossjax.data.spec import DataSpec
    from crossjax.train import training_augmentation

    spec = DataSpec(modalities=("image", "text"), num_classes=10, image_shape=(8, 8, 1))
    with pytest.raises(ConfigError, match=message):
        training_augmentation(setting, spec)
    assert training_augmentation(None, spec) is None
    assert set(training_augmentation("weak", spec)) == {"image"}
    with pytest.raises(ConfigError, match="augments images and audio; this dataset has neither"):
        training_augmentation("weak", DataSpec(modalities=("text",), num_classes=2))
