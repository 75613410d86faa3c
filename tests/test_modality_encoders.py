"""One builder of per-modality encoders for every model family: its argument check, the
same encoder for the same config in every family, and an acyclic crossjax.models."""

import ast
import pathlib

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models import build_model
from crossjax.models.encoders import AudioEncoder, CNNImageEncoder
from crossjax.models.modality_encoders import ENCODERS, build_encoder, encoder_inputs
from crossjax.models.recurrent import LSTMTextEncoder
from crossjax.models.transformer import TransformerTextEncoder, ViTImageEncoder

SPEC = DataSpec(
    modalities=("image", "text", "audio"),
    num_classes=5,
    vocab_size=12,
    max_text_len=6,
    image_shape=(8, 8, 1),
    audio_shape=(300,),
)
B = 2
# Small fields for every encoder a test picks, keyed by modality and encoder name.
TINY = {
    "image": {
        "mlp": {"hidden": (8,)},
        "cnn": {"channels": (4,)},
        "vit": {"patch_size": 4, "width": 8, "depth": 1, "num_heads": 2},
        "resnet18": {"width": 2, "stage_sizes": (1, 1)},
        "resnet50": {"width": 2, "stage_sizes": (1,)},
        "open_clip_vit": {"patch_size": 4, "width": 8, "layers": 1, "num_heads": 2},
        "siglip_vit": {"patch_size": 4, "width": 8, "layers": 1, "num_heads": 2, "intermediate": 8},
    },
    "text": {
        "bow": {"embed_dim": 4},
        "lstm": {"embed_dim": 4, "hidden": 6},
        "gru": {"embed_dim": 4, "hidden": 6},
        "transformer": {"width": 8, "depth": 1, "num_heads": 2},
        "open_clip_text": {"context_length": 6, "width": 8, "layers": 1, "num_heads": 2},
        "bert": {"width": 8, "layers": 1, "num_heads": 2, "intermediate": 8, "max_positions": 6},
        "gpt2": {"width": 8, "layers": 1, "num_heads": 2, "max_positions": 6},
        "siglip_text": {
            "width": 8,
            "layers": 1,
            "num_heads": 2,
            "intermediate": 8,
            "max_positions": 6,
        },
    },
    "audio": {"cnn": {"channels": (4,)}},
}


def batch(seed: int = 0) -> dict:
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    mask = jnp.arange(SPEC.max_text_len)[None, :] < jnp.array([[2], [6]])
    return {
        "image": jax.random.uniform(k1, (B, *SPEC.image_shape)),
        "text": jnp.where(mask, jax.random.randint(k2, (B, SPEC.max_text_len), 2, 12), 0),
        "text_mask": mask,
        "audio": jax.random.normal(k3, (B, *SPEC.audio_shape)),
        "label": jnp.zeros((B,), jnp.int32),
    }


def build(modality="image", spec=SPEC, encoder="cnn", kwargs=None, **extra):
    return build_encoder(
        modality,
        spec,
        encoder=encoder,
        kwargs=kwargs,
        features=extra.pop("features", 8),
        dtype=jnp.float32,
        model="m",
        **extra,
    )


# --- the one argument check -------------------------------------------------------------


@pytest.mark.parametrize(
    "args,match",
    [
        ({"modality": "video"}, r"cannot encode modality 'video'; valid: image, text, audio"),
        (
            {"spec": DataSpec(("text",), vocab_size=5, max_text_len=3)},
            r"asks for modality 'image' but the dataset provides only: text",
        ),
        (
            {"encoder": "resnet"},
            r"image_encoder='resnet': unknown image encoder 'resnet'; valid: cnn, mlp, open_clip_vit, resnet18, resnet50, siglip_vit, vit",
        ),
        (
            {"modality": "text", "encoder": "cnn"},
            r"valid: bert, bow, gpt2, gru, lstm, open_clip_text, siglip_text, transformer",
        ),
        ({"modality": "audio", "encoder": 3}, r"audio_encoder=3: unknown audio encoder"),
        ({"encoder": "nowhere.module:Encoder"}, r"cannot import module 'nowhere.module'"),
        ({"kwargs": [4]}, r"encoder_kwargs.image=\[4\]; valid: a dict of CNNImageEncoder"),
        (
            {"kwargs": {"kernel": 5}},
            r"no field 'kernel' in encoder_kwargs.image; valid: activate_final, batch_",
        ),
        ({"kwargs": {"features": 5}}, r"no field 'features'"),  # the model sets it
        (
            {"modality": "text", "encoder": "bow", "spec": DataSpec(("text",), max_text_len=3)},
            r"encodes text but the DataSpec has no vocab_size",
        ),
        (
            {"modality": "audio", "kwargs": {"frame_length": 512}},
            r"audio encoder AudioEncoder \(encoder_kwargs.audio\): audio has 300 samples, "
            r"fewer than frame_length=512; valid: frame_length <= 300",
        ),
        (
            {"modality": "audio", "spec": DataSpec(("audio",), audio_shape=(4, 300))},
            r"reads a waveform \(T,\) but the audio is \(4, 300\)",
        ),
        ({"encoder": "vit", "kwargs": {"patch_size": 3}}, r"not divisible into 3x3 patches"),
        (
            {"modality": "text", "encoder": "transformer", "kwargs": {"width": 6}},
            r"width=6 is not divisible by num_heads=4",
        ),
        (
            {"modality": "text", "encoder": "transformer", "kwargs": {"pool": "max"}},
            r"pool='max'; valid: mean, cls",
        ),
        (
            {"encoder": "cnn", "kwargs": {"frame_length": 4}, "kwargs_field": "encoder_kwargs"},
            r"no field 'frame_length' in encoder_kwargs;",
        ),
    ],
)
def test_each_bad_argument_is_a_one_line_config_error(args, match):
    with pytest.raises(ConfigError, match=match) as info:
        build(**args)
    assert "\n" not in str(info.value)


def test_builder_sets_model_fields_and_accepts_a_class_or_a_path():
    text = build("text", encoder="lstm", kwargs={"hidden": 6}, features=5)
    assert type(text) is LSTMTextEncoder
    assert (text.vocab_size, text.features, text.hidden) == (12, 5, 6)
    assert build(kwargs={"channels": [4, 8]}).channels == (4, 8)  # config lists -> tuples
    own = build(encoder="crossjax.models.encoders:MLPImageEncoder", kwargs={"hidden": (3,)})
    assert type(own).__name__ == "MLPImageEncoder" and own.hidden == (3,)
    assert type(build(encoder=CNNImageEncoder)) is CNNImageEncoder


def test_every_registered_encoder_builds_and_runs_at_its_width():
    data = batch()
    for modality, registry in ENCODERS.items():
        for name in registry.names():
            encoder = build(modality, encoder=name, kwargs=TINY[modality][name], features=7)
            inputs = encoder_inputs(modality, data)
            # One compiled program per encoder (op by op would compile every operation).
            run = jax.jit(lambda key, *x, enc=encoder: enc.apply(enc.init(key, *x), *x))
            chex.assert_shape(run(jax.random.key(0), *inputs), (B, 7))


def test_encoder_inputs_zero_absent_examples_and_masked_tokens():
    data = batch()
    keep = jnp.array([True, False])
    (image,) = encoder_inputs("image", data, keep)
    np.testing.assert_array_equal(image[0], data["image"][0])
    assert not np.any(image[1])
    ids, mask = encoder_inputs("text", {**data, "text": data["text"].at[:, -1].set(9)}, keep)
    np.testing.assert_array_equal(mask[0], data["text_mask"][0])
    assert not np.any(mask[1]) and not np.any(ids[1])
    np.testing.assert_array_equal(ids[0], jnp.where(data["text_mask"][0], data["text"][0], 0))
    ids, mask = encoder_inputs("text", {"text": jnp.array([[3, 0, 4]])})  # no mask: text != 0
    np.testing.assert_array_equal(mask, [[True, False, True]])


# --- every family uses it -----------------------------------------------------------------


def family_configs(modality: str, name: str) -> dict[str, ml_collections.ConfigDict]:
    """Configs of every family that encodes `modality`, each choosing encoder `name` with
    the fields TINY[modality][name] and an output width of 8."""
    kwargs = TINY[modality][name]
    keyed = {f"{modality}_encoder": name, "encoder_kwargs": {modality: kwargs}}
    configs = {
        "fusion_classifier": {"modalities": (modality,), "features": 8, **keyed},
        "multimodal_vae": {"modalities": (modality,), "features": 8, **keyed},
    }
    if modality == "image":
        configs["two_tower"] = {"text_encoder": "bow", "embed_dim": 8, **keyed}
        configs["captioner"] = {"image_encoder": name, "encoder_kwargs": kwargs, "features": 8}
    if modality == "text":
        configs["two_tower"] = {"image_encoder": "mlp", "embed_dim": 8, **keyed}
        configs["seq_autoencoder"] = {"encoder": name, "encoder_kwargs": kwargs, "latent_dim": 8}
    return {f: ml_collections.ConfigDict({"name": f, **c}) for f, c in configs.items()}


def encoder_of(model, modality: str):
    if hasattr(model, "encoders"):  # fusion classifier, multimodal VAE
        return model.encoders[modality]
    if hasattr(model, "image_encoder"):  # two tower
        return model.image_encoder if modality == "image" else model.text_encoder
    return model.encoder  # captioner, sequence autoencoder


@pytest.mark.parametrize(
    "modality,name",
    [("image", "mlp"), ("image", "cnn"), ("image", "vit")]
    + [("text", n) for n in ("bow", "lstm", "gru", "transformer")]
    + [("audio", "cnn")],
)
def test_every_family_builds_the_same_encoder_for_the_same_config(modality, name):
    encoders = {
        family: encoder_of(build_model(config, SPEC), modality)
        for family, config in family_configs(modality, name).items()
    }
    assert len(encoders) >= 2
    reference = build(modality, encoder=name, kwargs=TINY[modality][name], features=8)
    for family, encoder in encoders.items():
        assert encoder == reference, family  # same class and the same fields


@pytest.mark.parametrize("text_encoder", ["lstm", "gru", "transformer"])
def test_fusion_classifier_runs_with_any_text_encoder(text_encoder):
    config = ml_collections.ConfigDict(
        {
            "name": "fusion_classifier",
            "modalities": ("image", "text"),
            "text_encoder": text_encoder,
            "encoder_kwargs": {"text": TINY["text"][text_encoder], "image": {"hidden": (8,)}},
            "features": 6,
            "hidden": (8,),
        }
    )
    model = build_model(config, SPEC)
    assert isinstance(model.encoders["text"], type(build("text", encoder=text_encoder)))
    data = batch()
    variables = model.init(jax.random.key(0), data)
    out = jax.jit(model.apply)(variables, data)
    chex.assert_shape(out["logits"], (B, SPEC.num_classes))
    chex.assert_shape([out["emb/text"], out["emb/image"]], (B, 6))
    # Padded positions do not matter to any of them.
    noisy = {**data, "text": jnp.where(data["text_mask"], data["text"], 11)}
    np.testing.assert_allclose(model.apply(variables, noisy)["logits"], out["logits"], atol=1e-6)


def test_fusion_classifier_with_a_vit_and_a_transformer():
    config = ml_collections.ConfigDict(
        {
            "name": "fusion_classifier",
            "image_encoder": "vit",
            "text_encoder": "transformer",
            "encoder_kwargs": {
                k: TINY[k][v] for k, v in [("image", "vit"), ("text", "transformer")]
            }
            | {"audio": TINY["audio"]["cnn"]},
            "features": 8,
        }
    )
    model = build_model(config, SPEC)
    assert isinstance(model.encoders["image"], ViTImageEncoder)
    assert isinstance(model.encoders["text"], TransformerTextEncoder)
    assert isinstance(model.encoders["audio"], AudioEncoder)
    out = model.apply(model.init(jax.random.key(0), batch()), batch())
    chex.assert_shape(out["logits"], (B, SPEC.num_classes))


@pytest.mark.parametrize(
    "config",
    [
        {"name": "fusion_classifier", "modalities": ("audio",)},
        {"name": "fusion_classifier", "modalities": ("audio",), "fusion": "early_concat"},
        {"name": "multimodal_vae", "modalities": ("image", "audio")},
    ],
)
def test_audio_frame_length_check_reaches_every_family(config):
    config = ml_collections.ConfigDict(
        {**config, "encoder_kwargs": {"audio": {"frame_length": 512}}}
    )
    with pytest.raises(ConfigError, match=r"fewer than frame_length=512") as info:
        build_model(config, SPEC)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["vae", "multimodal_vae"])
def test_audio_shorter_than_the_reconstruction_target_is_a_config_error(name):
    # Their audio likelihood scores the log spectrogram of 256-sample frames.
    spec = DataSpec(("audio",), audio_shape=(200,))
    fields = {"modality": "audio"} if name == "vae" else {"modalities": ("audio",)}
    if name == "multimodal_vae":
        fields["encoder_kwargs"] = {"audio": {"frame_length": 128}}
    with pytest.raises(ConfigError, match=r"valid: a waveform \(T,\), T >= 256"):
        build_model(ml_collections.ConfigDict({"name": name, **fields}), spec)


def test_models_package_import_graph_is_acyclic():
    """No submodule imports the `crossjax.models` package, and the submodules' imports of
    each other form no cycle."""
    folder = pathlib.Path(__file__).parent.parent / "crossjax" / "models"
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    edges: dict[str, set[str]] = {}
    for name in modules:
        tree = ast.parse((folder / f"{name}.py").read_text())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "crossjax.models":
                targets |= {a.name for a in node.names}
                assert not {a.name for a in node.names} - modules, f"{name} imports the package"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "crossjax.models."
            ):
                targets.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                assert all(a.name != "crossjax.models" for a in node.names), name
        edges[name] = targets & modules
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for target in edges[name]:
                visit(target, (*path, name))
            done.add(name)

    for name in sorted(modules):
        visit(name, ())


def test_cnn_image_encoder_flatten_pool_is_the_flax_mnist_cnn():
    """pool="flatten" feeds the whole last conv map to the Dense layer (7 x 7 x 8 inputs
    for 28 x 28 images after two 2x2 pools); activate_final puts a ReLU after it."""
    image = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    flat = CNNImageEncoder(channels=(4, 8), features=16, pool="flatten", activate_final=True)
    params = flat.init(jax.random.key(1), image)
    out = flat.apply(params, image)
    assert out.shape == (2, 16) and bool(jnp.all(out >= 0))
    assert params["params"]["Dense_0"]["kernel"].shape == (7 * 7 * 8, 16)
    mean = CNNImageEncoder(channels=(4, 8), features=16)
    assert mean.init(jax.random.key(1), image)["params"]["Dense_0"]["kernel"].shape == (8, 16)
    assert bool(jnp.any(mean.apply(mean.init(jax.random.key(1), image), image) < 0))
    with pytest.raises(ValueError, match="pool='max'"):
        CNNImageEncoder(pool="max").check((28, 28, 1))
