"""Every config file in configs/ and each of its variants loads, validates and builds its
model (shapes only: `jax.eval_shape` of init, no data, no training); the fusion config's
method variants come from the fusion registry."""

from pathlib import Path

import jax
import pytest

from crossjax.config import load_config_file, validate_config
from crossjax.data.spec import DataSpec, dummy_batch
from crossjax.errors import ConfigError
from crossjax.models import build_model
from crossjax.models.fusion_methods import FUSIONS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHODS = FUSIONS.names()
TINY = [None, "tiny"]
MULTIMODAL_VAE = [None, "tiny", "missing", "clean", "tiny_missing", "clean_missing"]
# The variants of each config file (None: the default); a new file must be listed here.
VARIANTS = {
    "digits_fusion": [*TINY, "clean", "clean_tiny", *METHODS, *(f"{m}_tiny" for m in METHODS)],
    "digits_image": [*TINY, "clean"],
    "digits_text": [*TINY, "clean"],
    "digits_audio": [*TINY, "clean"],
    "digits_align": [*TINY, "film_tiny"],
    "digits_mvae": [*MULTIMODAL_VAE, "noalign", "clean_noalign"],
    "digits_mmvae": MULTIMODAL_VAE,
    "digits_mopoe": MULTIMODAL_VAE,
    "shapes_mvae": [*TINY, "missing"],
    "shapes_clip": [*TINY, "transformer", "transformer_tiny", "siglip", "siglip_transformer_tiny"],
    "digits_vae": [*TINY, "iwae", "iwae_tiny"],
    "files_vae": [*TINY, "iwae", "iwae_tiny"],
    "files_clip": [*TINY, "siglip", "siglip_tiny"],
    "clip_vit_b32": [*TINY, "lit", "lit_tiny", "probe", "probe_tiny", "zeroshot_tiny", "quickgelu"],
    "mnist_vae": TINY,
    "mnist_m2": [*TINY, "600", "1000", "3000"],
    "mnist_cnn": [*TINY, "fashion", "fashion_tiny"],
    "av_mnist": [*TINY, "av", "image", "audio_tiny", "text", "mvae", "mopoe_tiny", "mmvae_missing",
                 "mvae_missing_tiny", "fusion_missing", "mopoe_labels", "mopoe_labels_tiny",
                 "image_labels", "mvae_weak", "cotrain", "cotrain_tiny", "image_fixmatch",
                 "audio_fixmatch_tiny"],
    "mnist_fixmatch": [*TINY, "supervised", "supervised_tiny"],
    "fashion_mnist": [*TINY, "resnet18", "resnet18_tiny"],
    **{
        name: TINY
        for name in (
            "digits_clip", "digits_text_seq_ae",
            "shapes_captioner", "mnist", "svhn", "cifar10", "coco_captions",
            "spoken_digit", "mnist_svhn", "polymnist", "files_manifest",
            "files_coco", "files_idx", "files_image_folder", "files_captioner",
            "files_audio_folder",
        )
    },
}  # fmt: skip
NOT_CONFIGS = {"__init__", "common"}  # shared helpers, no get_config
# (H, W, C) of each dataset's images when the config does not set data.image_size.
IMAGE_SHAPES = {
    "crossjax_digits": (8, 8, 1),
    "crossjax_shapes": (32, 32, 3),
    "crossjax_polymnist": (28, 28, 3),
    "svhn_cropped": (32, 32, 3),
    "cifar10": (32, 32, 3),
}
DEFAULT_IMAGE = (28, 28, 1)  # mnist and its pairings, fashion_mnist, idx files
DIGITS_AUDIO = (2000,)  # crossjax_digits' 0.25 s at 8 kHz


def spec_of(data) -> DataSpec:
    """A DataSpec as the pipeline would report for `data` (a config's data section)."""
    name = data.name.split("/")[0]
    if data.image_size:
        image = (*data.image_size, 1 if data.image_mode == "L" else 3)
    else:
        image = IMAGE_SHAPES.get(name, DEFAULT_IMAGE)
    return DataSpec(
        modalities=tuple(data.modalities),
        num_classes=10 if data.label_key else None,
        vocab_size=min(data.max_vocab_size, 60),
        max_text_len=data.max_text_len,
        image_shape=image,
        audio_shape=(data.audio_length,) if data.audio_length else DIGITS_AUDIO,
        sample_rate=8000,
    )


CASES = [(name, v) for name, variants in VARIANTS.items() for v in variants]


def test_every_config_file_is_tested():
    files = {p.stem for p in CONFIGS.glob("*.py")} - NOT_CONFIGS
    assert files == set(VARIANTS)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}:{v}" for n, v in CASES])
def test_config_loads_validates_and_builds_its_model(name, variant):
    path = CONFIGS / f"{name}.py"
    assert path.read_text().startswith(
        f'"""python scripts/train.py --config configs/{name}.py --workdir '
    ), "a config's docstring starts with the command that runs it"
    config = load_config_file(f"{path}:{variant}" if variant else str(path))
    validate_config(config)
    if variant and "tiny" in variant.split("_"):
        assert config.num_train_steps <= 8
    spec = spec_of(config.data)
    model = build_model(config.model, spec)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy_batch(spec, 2)))
    assert jax.tree.leaves(shapes)


def test_fusion_method_variants_set_the_method():
    default = load_config_file(f"{CONFIGS / 'digits_fusion.py'}")
    assert default.model.fusion == "concat" and "robustness" not in default.evaluators
    film = load_config_file(f"{CONFIGS / 'digits_fusion.py'}:film_tiny")
    assert film.model.fusion == "film" and film.model.fusion_kwargs.to_dict() == {
        "conditioned": "image"
    }
    assert "robustness" in film.evaluators and film.data.name == "crossjax_digits/tiny"
    early = load_config_file(f"{CONFIGS / 'digits_fusion.py'}:tiny_early_concat")
    assert early.model.fusion == "early_concat" and early.num_train_steps == 8


@pytest.mark.parametrize("variant", ["nope", "film_sum", "film_", "tiny_huge", "concats"])
def test_unknown_fusion_variant_is_one_line_listing_the_registered_methods(variant):
    with pytest.raises(ConfigError) as info:
        load_config_file(f"{CONFIGS / 'digits_fusion.py'}:{variant}")
    message = str(info.value)
    assert "\n" not in message and f"unknown config variant {variant!r}" in message
    assert f"one fusion method ({', '.join(METHODS)})" in message


def test_unknown_tiny_only_variant_is_rejected():
    with pytest.raises(ConfigError, match="unknown config variant 'huge'"):
        load_config_file(f"{CONFIGS / 'digits_vae.py'}:huge")


def test_one_line_variants_replace_their_files():
    clip, siglip = (load_config_file(f"{CONFIGS / 'shapes_clip.py'}{v}") for v in ("", ":siglip"))
    assert [loss for loss, _ in clip.losses] == ["clip"] and clip.model.init_bias == 0.0
    assert [loss for loss, _ in siglip.losses] == ["siglip"] and siglip.model.init_bias == -10.0
    vae, iwae = (load_config_file(f"{CONFIGS / 'digits_vae.py'}{v}") for v in ("", ":iwae"))
    assert dict(iwae.evaluators)["iwae_nll"]["num_samples"] == 64
    assert "iwae_nll" not in dict(vae.evaluators)
