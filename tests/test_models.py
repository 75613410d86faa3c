"""Encoders, fusion classifier, autoencoders and the model registry on a tiny DataSpec."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.signal
from absl.testing import parameterized

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models import MODELS, build_model, decoders
from crossjax.models.encoders import (
    IMAGE_ENCODERS,
    AudioEncoder,
    BagOfWordsTextEncoder,
    CNNImageEncoder,
    MLPImageEncoder,
    log_spectrogram,
)
from crossjax.models.vae import GaussianVAE

SPEC = DataSpec(
    modalities=("image", "text", "audio"),
    num_classes=10,
    vocab_size=50,
    max_text_len=12,
    image_shape=(8, 8, 1),
    audio_shape=(2000,),
    sample_rate=8000,
)
B = 3
TINY_ENCODERS = {
    "image": {"channels": (4, 8)},
    "audio": {"frame_length": 128, "hop_length": 128, "channels": (4,)},
    "text": {"embed_dim": 8},
}


def make_batch(seed: int = 0, batch_size: int = B) -> dict:
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(seed), 5)
    lengths = jax.random.randint(k4, (batch_size,), 1, SPEC.max_text_len + 1)
    return {
        "image": jax.random.uniform(k1, (batch_size, *SPEC.image_shape)),
        "text": jax.random.randint(k2, (batch_size, SPEC.max_text_len), 2, SPEC.vocab_size),
        "text_mask": jnp.arange(SPEC.max_text_len)[None, :] < lengths[:, None],
        "audio": jax.random.normal(k3, (batch_size, *SPEC.audio_shape)),
        "label": jax.random.randint(k5, (batch_size,), 0, SPEC.num_classes),
    }


def fusion_config(**overrides) -> ml_collections.ConfigDict:
    fields = {
        "name": "fusion_classifier",
        "image_encoder": "cnn",
        "encoder_kwargs": TINY_ENCODERS,
        "features": 8,
        "hidden": (16,),
        "dropout": 0.1,
    }
    return ml_collections.ConfigDict({**fields, **overrides})


# --- spectrogram --------------------------------------------------------------


def numpy_log_spectrogram(audio: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    window = scipy.signal.get_window("hann", frame_length)  # periodic Hann
    frames = 1 + (audio.shape[1] - frame_length) // hop_length
    out = np.stack(
        [
            np.abs(np.fft.rfft(audio[:, t * hop_length : t * hop_length + frame_length] * window))
            for t in range(frames)
        ],
        axis=1,
    )
    return np.log(1e-6 + out)


@pytest.mark.parametrize("frame_length,hop_length", [(256, 128), (64, 48)])
def test_log_spectrogram_matches_numpy(frame_length, hop_length):
    audio = np.random.default_rng(0).normal(size=(2, 2000)).astype(np.float32)
    got = np.asarray(
        jax.jit(log_spectrogram, static_argnums=(1, 2))(audio, frame_length, hop_length)
    )
    expected = numpy_log_spectrogram(audio.astype(np.float64), frame_length, hop_length)
    frames = 1 + (2000 - frame_length) // hop_length
    chex.assert_shape(got, (2, frames, frame_length // 2 + 1))
    np.testing.assert_allclose(np.exp(got), np.exp(expected), rtol=1e-4, atol=1e-4)


def test_log_spectrogram_of_a_sine_peaks_at_its_bin():
    sample_rate, frame_length = 8000, 256
    t = np.arange(2000) / sample_rate
    tone_bin = 20  # a frequency that falls exactly on rfft bin 20
    audio = np.sin(2 * np.pi * tone_bin * sample_rate / frame_length * t)[None].astype(np.float32)
    spec = np.asarray(log_spectrogram(audio, frame_length, 128))
    assert (spec.argmax(axis=-1) == tone_bin).all()


def test_log_spectrogram_rejects_audio_shorter_than_a_frame():
    with pytest.raises(ValueError, match="shorter than one frame"):
        log_spectrogram(jnp.zeros((1, 100)), 256, 128)


# --- encoders -----------------------------------------------------------------

ENCODER_CASES = [
    ("mlp_image", lambda: MLPImageEncoder(hidden=(16,), features=8), lambda b: (b["image"],)),
    ("cnn_image", lambda: CNNImageEncoder(channels=(4, 8), features=8), lambda b: (b["image"],)),
    (
        "bag_of_words",
        lambda: BagOfWordsTextEncoder(vocab_size=50, embed_dim=8, features=8),
        lambda b: (b["text"], b["text_mask"]),
    ),
    (
        "audio",
        lambda: AudioEncoder(frame_length=128, hop_length=128, channels=(4,), features=8),
        lambda b: (b["audio"],),
    ),
]


class EncoderTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*ENCODER_CASES)
    def test_shape_and_jit_equality(self, make, inputs):
        module, args = make(), inputs(make_batch())
        variables = module.init(jax.random.key(0), *args)
        out = self.variant(module.apply)(variables, *args)
        chex.assert_shape(out, (B, 8))
        chex.assert_tree_all_finite(out)
        chex.assert_trees_all_close(out, module.apply(variables, *args), rtol=1e-5, atol=1e-6)

    def test_bfloat16_computation_keeps_float32_params(self):
        module = MLPImageEncoder(hidden=(16,), features=8, dtype=jnp.bfloat16)
        image = make_batch()["image"]
        variables = module.init(jax.random.key(0), image)
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
        assert module.apply(variables, image).dtype == jnp.bfloat16


def test_image_encoder_registry():
    assert IMAGE_ENCODERS.get("mlp") is MLPImageEncoder
    assert IMAGE_ENCODERS.get("cnn") is CNNImageEncoder
    with pytest.raises(ConfigError, match="valid: cnn, .*mlp"):
        IMAGE_ENCODERS.get("resnet")


def test_masked_mean_pooling_ignores_masked_token_ids():
    encoder = BagOfWordsTextEncoder(vocab_size=50, embed_dim=8, features=8)
    batch = make_batch()
    variables = encoder.init(jax.random.key(0), batch["text"], batch["text_mask"])
    # Different ids at masked positions, including out-of-range garbage.
    other_text = jnp.where(batch["text_mask"], batch["text"], 10_000)
    out = encoder.apply(variables, batch["text"], batch["text_mask"])
    other = encoder.apply(variables, other_text, batch["text_mask"])
    chex.assert_trees_all_close(out, other)
    # And it is the mean of the unmasked embeddings, projected.
    table = variables["params"]["Embed_0"]["embedding"]
    mask = np.asarray(batch["text_mask"])
    means = np.stack(
        [np.asarray(table)[np.asarray(batch["text"][i])[mask[i]]].mean(0) for i in range(B)]
    )
    dense = variables["params"]["Dense_0"]
    np.testing.assert_allclose(out, means @ dense["kernel"] + dense["bias"], rtol=1e-5, atol=1e-6)


# --- registered models --------------------------------------------------------

MODEL_CASES = [
    ("fusion_all", fusion_config()),
    (
        "fusion_image_only_mlp",
        fusion_config(modalities=("image",), image_encoder="mlp", encoder_kwargs={}),
    ),
    ("fusion_text_only", fusion_config(modalities=["text"])),
    ("vae", ml_collections.ConfigDict({"name": "vae", "hidden": (16,), "latent_dim": 3})),
    (
        "autoencoder",
        ml_collections.ConfigDict({"name": "autoencoder", "hidden": (16,), "latent_dim": 3}),
    ),
    (
        "vae_audio",
        ml_collections.ConfigDict(
            {"name": "vae", "modality": "audio", "hidden": (8,), "latent_dim": 2}
        ),
    ),
]


def expected_shapes(config) -> dict:
    if config.name == "fusion_classifier":
        modalities = config.get("modalities") or SPEC.modalities
        return {"logits": (B, 10), **{f"emb/{m}": (B, 8) for m in modalities}}
    modality = config.get("modality", "image")
    shape = {"image": SPEC.image_shape, "audio": SPEC.audio_shape}[modality]
    z = config.latent_dim
    out = {"z": (B, z), f"recon/{modality}": (B, *shape), f"recon_mean/{modality}": (B, *shape)}
    if modality == "audio":  # audio models reconstruct the log spectrogram they read
        spectrogram = decoders.spectrogram_shape(SPEC.audio_shape[0], 256, 128)
        out.update(
            {k: (B, *spectrogram) for k in ("recon/audio", "recon_mean/audio", "target/audio")}
        )
    if config.name == "vae":
        out.update({"z_mean": (B, z), "z_logvar": (B, z)})
    return out


RNGS = {"dropout": jax.random.key(1), "sample": jax.random.key(2)}


class ModelTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*MODEL_CASES)
    def test_output_shapes_and_jit_equality(self, config):
        model = build_model(config, SPEC)
        batch = make_batch()
        variables = model.init(jax.random.key(0), batch)
        expected = expected_shapes(config)
        for train in (False, True):
            apply = self.variant(
                lambda v, b, r, train=train: model.apply(v, b, train=train, rngs=r)
            )
            out = apply(variables, batch, RNGS)
            assert set(out) == set(expected), sorted(out)
            for key, shape in expected.items():
                chex.assert_shape(out[key], shape)
                assert out[key].dtype == jnp.float32, key
            chex.assert_tree_all_finite(out)
            reference = model.apply(variables, batch, train=train, rngs=RNGS)
            chex.assert_trees_all_close(out, reference, rtol=1e-5, atol=1e-5)


def test_fusion_ignores_values_of_an_absent_modality():
    model = build_model(fusion_config(dropout=0.0, image_encoder="mlp", encoder_kwargs={}), SPEC)
    batch = make_batch()
    variables = model.init(jax.random.key(0), batch)
    absent = jnp.array([True, False, True])  # example 1 lacks audio and text
    batch = {**batch, "present/audio": absent, "present/text": absent}
    garbage = {
        **batch,
        "audio": jnp.where(absent[:, None], batch["audio"], jnp.nan),
        "text": jnp.where(absent[:, None], batch["text"], 999),
        "text_mask": jnp.where(absent[:, None], batch["text_mask"], True),
    }

    @jax.jit
    def outputs_and_grads(b):
        grads = jax.grad(lambda v: model.apply(v, b)["logits"].sum())(variables)
        return model.apply(variables, b), grads

    out, _ = outputs_and_grads(batch)
    out_garbage, grads = outputs_and_grads(garbage)
    chex.assert_trees_all_close(out, out_garbage)
    chex.assert_tree_all_finite(out_garbage)
    # Gradients stay finite despite NaN inputs in the absent slots.
    chex.assert_tree_all_finite(grads)
    np.testing.assert_array_equal(out["emb/audio"][1], 0.0)
    np.testing.assert_array_equal(out["emb/text"][1], 0.0)
    assert np.abs(out["emb/image"][1]).sum() > 0
    # Absence changes the prediction input (the presence bit), so logits differ.
    all_present, _ = outputs_and_grads({**batch, "present/audio": jnp.ones(B, bool)})
    assert not np.allclose(all_present["logits"][1], out["logits"][1])


def test_fusion_dropout_uses_the_dropout_stream():
    model = build_model(fusion_config(dropout=0.5, modalities=("image",)), SPEC)
    batch = make_batch()
    variables = model.init(jax.random.key(0), batch)
    a = model.apply(variables, batch, train=True, rngs={"dropout": jax.random.key(1)})
    b = model.apply(variables, batch, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(a["logits"], b["logits"])
    chex.assert_trees_all_close(model.apply(variables, batch), model.apply(variables, batch))


def test_vae_samples_in_training_and_uses_the_mean_in_eval():
    model = build_model(
        ml_collections.ConfigDict({"name": "vae", "hidden": (16,), "latent_dim": 3}), SPEC
    )
    batch = make_batch()
    variables = model.init(jax.random.key(0), batch)
    evaluated = model.apply(variables, batch)
    np.testing.assert_array_equal(evaluated["z"], evaluated["z_mean"])
    z1 = model.apply(variables, batch, train=True, rngs={"sample": jax.random.key(1)})["z"]
    z2 = model.apply(variables, batch, train=True, rngs={"sample": jax.random.key(2)})["z"]
    assert not np.allclose(z1, z2)
    # A 'sample' rng in eval gives a sampled z (the trainer's ELBO estimate), same as train.
    z3 = model.apply(variables, batch, train=False, rngs={"sample": jax.random.key(1)})["z"]
    np.testing.assert_array_equal(z1, z3)
    recon = model.apply(variables, batch)
    np.testing.assert_allclose(
        recon["recon_mean/image"], jax.nn.sigmoid(recon["recon/image"]), rtol=1e-6
    )
    # decode() on its own, for sampling from the prior.
    z = jax.random.normal(jax.random.key(3), (5, 3))
    samples = model.apply(variables, z, method=GaussianVAE.decode)
    chex.assert_shape(samples, (5, *SPEC.image_shape))
    np.testing.assert_allclose(
        model.apply(variables, evaluated["z"], method=GaussianVAE.decode),
        evaluated["recon/image"],
        rtol=1e-6,
    )


def test_models_are_registered():
    assert {"fusion_classifier", "vae", "autoencoder"} <= set(MODELS.names())


def test_build_model_accepts_frozen_config_and_bfloat16():
    config = ml_collections.FrozenConfigDict(
        fusion_config(
            dtype="bfloat16", modalities=("image", "text"), image_encoder="mlp", encoder_kwargs={}
        )
    )
    model = build_model(config, SPEC)
    variables = model.init(jax.random.key(0), make_batch())
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    assert model.apply(variables, make_batch())["emb/image"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "config,spec,match",
    [
        (
            ml_collections.ConfigDict({"name": "transformer"}),
            SPEC,
            r"unknown model 'transformer'; valid: autoencoder, .*fusion_classifier, .*vae",
        ),
        (
            fusion_config(modalities=("image", "audio")),
            DataSpec(("image", "text"), 10, 50, 12, (8, 8, 1)),
            r"asks for modality 'audio'.*only: image, text",
        ),
        (
            fusion_config(modalities=("video",)),
            SPEC,
            r"cannot encode modality 'video'; valid: image, text, audio",
        ),
        (fusion_config(hidden_size=3), SPEC, r"no field 'hidden_size'; valid: .*hidden"),
        (
            fusion_config(image_encoder="resnet"),
            SPEC,
            r"unknown image encoder 'resnet'; valid: cnn, .*mlp",
        ),
        (fusion_config(fusion="attention"), SPEC, r"unknown fusion 'attention'; valid: concat"),
        (
            fusion_config(encoder_kwargs={"image": {"kernel": 5}}),
            SPEC,
            r"no field 'kernel' in encoder_kwargs.image; valid: activate_final, batch_blocks, channels",
        ),
        (fusion_config(dtype="int8"), SPEC, r"dtype 'int8'; valid: float32"),
        (
            fusion_config(),
            DataSpec(("image",), None, image_shape=(8, 8, 1)),
            r"needs a labelled dataset",
        ),
        (
            ml_collections.ConfigDict({"name": "vae", "modality": "text"}),
            SPEC,
            r"cannot reconstruct modality 'text'; valid: image, audio",
        ),
        (
            ml_collections.ConfigDict({"name": "vae", "modality": "audio"}),
            DataSpec(("image",), image_shape=(8, 8, 1)),
            r"asks for modality 'audio'",
        ),
        (
            ml_collections.ConfigDict({"name": "autoencoder", "latent": 3}),
            SPEC,
            r"no field 'latent'; valid: decoder, decoder_hidden, dtype, hidden, latent_dim, likelihood, modality",
        ),
        (ml_collections.ConfigDict({"hidden": 3}), SPEC, r"needs a string 'name'"),
    ],
)
def test_build_model_errors(config, spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_model(config, spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"hidden": "256"}, r"hidden='256'; valid: a list of positive ints"),
        ({"features": 0}, r"features=0; valid: an int >= 1"),
        ({"dropout": 1.0}, r"dropout=1.0; valid: 0 <= dropout < 1"),
        ({"encoder_kwargs": {"imgae": {}}}, r"encoder_kwargs has key 'imgae'; valid: image"),
        ({"encoder_kwargs": {"audio": {"frame_length": 4096}}}, r"fewer than frame_length=4096"),
    ],
)
def test_fusion_field_values_are_checked(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_model(fusion_config(**overrides), SPEC)


def test_single_modality_baseline_reuses_fusion_settings():
    # encoder_kwargs for modalities the model does not use are ignored.
    model = build_model(fusion_config(modalities="image"), SPEC)
    assert list(model.encoders) == ["image"]
    assert model.encoders["image"].channels == (4, 8)
    assert model.hidden == (16,)


def test_gelu_exact_matches_jax_and_its_derivative():
    from crossjax.models.activations import gelu_exact

    x = jnp.linspace(-10.0, 10.0, 4001)
    np.testing.assert_allclose(gelu_exact(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
    grad = jax.vmap(jax.grad(gelu_exact))(x)
    want = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
    np.testing.assert_allclose(grad, want, atol=2e-6)
    np.testing.assert_allclose(jax.jit(gelu_exact)(x), gelu_exact(x), atol=1e-7)
    # The custom JVP against finite differences (float64 would be exact; float32 central
    # differences with h=1e-2 are accurate to ~1e-4 here).
    h = 1e-2
    numeric = (gelu_exact(x + h) - gelu_exact(x - h)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=2e-4)
