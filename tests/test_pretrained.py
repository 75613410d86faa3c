"""Pretrained encoders against their reference implementations, from committed fixtures
(tests/fixtures/make_pretrained.py wrote them with torchvision and open_clip; no torch here)."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models import build_model, pretrained
from crossjax.models.clip_towers import CLIPTextTransformer, CLIPVisionTransformer
from crossjax.models.encoders import IMAGE_ENCODERS, TEXT_ENCODERS
from crossjax.models.hf_text import BertTextEncoder, GPT2TextEncoder
from crossjax.models.resnet import ResNet18, ResNet50
from crossjax.models.siglip_towers import SiglipTextTransformer, SiglipVisionTransformer

FIXTURES = Path(__file__).parent / "fixtures" / "pretrained"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURES / "outputs.npz") as f:
        return {k: f[k] for k in f.files}


def _template(module, *inputs):
    return jax.eval_shape(module.init, jax.random.key(0), *inputs)


def _assert_close(got, want):
    """Max abs difference <= 1e-4, and <= 1e-4 of the outputs' spread when that is < 1."""
    assert got.shape == want.shape
    assert np.std(want) > 0.05  # the comparison is not between near-zero outputs
    bound = TOLERANCE * min(1.0, float(np.std(want)))
    np.testing.assert_array_less(np.max(np.abs(np.asarray(got) - want)), bound)


@pytest.mark.parametrize(
    "module, file",
    [
        (ResNet18(width=2, features=10), "resnet18.pt"),
        (ResNet50(width=2, features=10), "resnet50.safetensors"),
    ],
)
def test_resnet_matches_torchvision(reference, module, file):
    image = jnp.asarray(reference["resnet_image"], jnp.float32)
    variables = pretrained.load_pretrained(
        FIXTURES / file, _template(module, image), "torchvision_resnet"
    )
    assert set(variables) == {"params", "batch_stats"}
    logits = jax.jit(module.apply)(variables, image)
    _assert_close(logits, reference[f"{file.split('.')[0]}_logits"])


@pytest.mark.parametrize(
    "file, fields",
    [
        ("clip", dict(width=16, layers=2, num_heads=2, features=16, quick_gelu=False)),
        ("quick_clip", dict(width=8, layers=1, num_heads=2, features=8, quick_gelu=True)),
    ],
)
def test_clip_towers_match_open_clip(reference, file, fields):
    image = jnp.asarray(reference["clip_image"], jnp.float32)
    text = jnp.asarray(reference["clip_text"])
    vit = CLIPVisionTransformer(patch_size=16 if fields["quick_gelu"] else 8, **fields)
    tower = CLIPTextTransformer(vocab_size=64, context_length=12, **fields)
    name = "clip_quickgelu" if file == "quick_clip" else "clip"
    state = pretrained.read_state_dict(FIXTURES / f"{name}.safetensors")
    v_vars = pretrained.convert_state_dict(state, _template(vit, image), "open_clip_visual")
    t_vars = pretrained.convert_state_dict(
        state, _template(tower, text, text > 0), "open_clip_text"
    )
    _assert_close(jax.jit(vit.apply)(v_vars, image), reference[f"{file}_image_features"])
    _assert_close(jax.jit(tower.apply)(t_vars, text, text > 0), reference[f"{file}_text_features"])


def test_siglip_towers_match_transformers(reference):
    image = jnp.asarray(reference["clip_image"], jnp.float32)
    text = jnp.asarray(reference["clip_text"])
    fields = dict(width=16, layers=2, num_heads=2, intermediate=32, features=16)
    vit = SiglipVisionTransformer(patch_size=8, **fields)
    tower = SiglipTextTransformer(64, max_positions=12, **fields)
    state = pretrained.read_state_dict(FIXTURES / "siglip.safetensors")
    v_vars = pretrained.convert_state_dict(state, _template(vit, image), "hf_siglip_vision")
    t_vars = pretrained.convert_state_dict(state, _template(tower, text), "hf_siglip_text")
    _assert_close(jax.jit(vit.apply)(v_vars, image), reference["siglip_image_features"])
    _assert_close(jax.jit(tower.apply)(t_vars, text), reference["siglip_text_features"])


@pytest.mark.parametrize(
    "module, file",
    [
        (BertTextEncoder(64, width=16, layers=2, num_heads=2, intermediate=32, max_positions=16,
                         project=False), "bert"),
        (GPT2TextEncoder(64, width=16, layers=2, num_heads=2, max_positions=16, project=False),
         "gpt2"),
    ],
)  # fmt: skip
def test_hf_text_encoders_match_transformers(reference, module, file):
    text, mask = jnp.asarray(reference["hf_text"]), jnp.asarray(reference["hf_text_mask"])
    variables = pretrained.load_pretrained(
        FIXTURES / f"{file}.safetensors", _template(module, text, mask), f"hf_{file}"
    )
    _assert_close(jax.jit(module.apply)(variables, text, mask), reference[f"{file}_pooled"])


def test_fresh_projection_keeps_its_initial_value():
    module = GPT2TextEncoder(64, width=16, layers=2, num_heads=2, max_positions=16, features=5)
    text, mask = jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), bool)
    init = jax.jit(module.init)(jax.random.key(3), text, mask)
    state = pretrained.read_state_dict(FIXTURES / "gpt2.safetensors")
    variables = pretrained.convert_state_dict(state, init, "hf_gpt2")
    np.testing.assert_array_equal(
        variables["params"]["projection"]["kernel"], init["params"]["projection"]["kernel"]
    )
    np.testing.assert_array_equal(
        variables["params"]["wte"]["embedding"], state["transformer.wte.weight"]
    )
    with pytest.raises(ConfigError, match=r"missing \(2\): params/projection/bias, params/pro"):
        no_fresh = dataclasses.replace(pretrained.LAYOUTS["hf_gpt2"], fresh=())
        pretrained.convert_state_dict(state, init, no_fresh)


def test_encoders_are_registered_under_new_names():
    assert IMAGE_ENCODERS.get("resnet18") is ResNet18
    assert IMAGE_ENCODERS.get("resnet50") is ResNet50
    assert IMAGE_ENCODERS.get("open_clip_vit") is CLIPVisionTransformer
    assert TEXT_ENCODERS.get("open_clip_text") is CLIPTextTransformer
    assert TEXT_ENCODERS.get("bert") is BertTextEncoder
    assert TEXT_ENCODERS.get("gpt2") is GPT2TextEncoder
    assert IMAGE_ENCODERS.get("siglip_vit") is SiglipVisionTransformer
    assert TEXT_ENCODERS.get("siglip_text") is SiglipTextTransformer


def test_one_line_error_names_every_missing_unexpected_and_misshaped_weight():
    state = pretrained.read_state_dict(FIXTURES / "clip.safetensors")
    state["visual.extra.weight"] = np.zeros((3, 3), np.float32)
    del state["visual.ln_post.bias"]
    # 3 layers where the file has 2, and a wider projection than the file's 16.
    vit = CLIPVisionTransformer(patch_size=8, width=16, layers=3, num_heads=2, features=24)
    template = _template(vit, jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ConfigError) as err:
        pretrained.convert_state_dict(state, template, "open_clip_visual", source="clip.st")
    message = str(err.value)
    assert "\n" not in message
    assert "missing (13)" in message and "params/ln_post/bias" in message
    assert "params/transformer/resblocks_2/attn/in_proj/kernel" in message
    assert "unexpected (1): visual.extra.weight" in message
    assert "mis-shaped (1): visual.proj (16, 16) vs model params/proj (16, 24)" in message


def test_resnet_needs_its_batch_stats():
    module = ResNet18(width=2, stage_sizes=(1,), features=3)
    image = jnp.zeros((1, 16, 16, 3))
    variables = jax.eval_shape(module.init, jax.random.key(0), image)
    with pytest.raises(ConfigError, match="batch_stats"):
        jax.eval_shape(module.apply, {"params": variables["params"]}, image)


def test_resnet_train_mode_updates_statistics_unless_frozen():
    image = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    for frozen in (False, True):
        module = ResNet18(width=2, stage_sizes=(1,), features=3, frozen_statistics=frozen)
        variables = jax.jit(module.init)(jax.random.key(0), image)
        train = functools.partial(module.apply, train=True, mutable=["batch_stats"])
        _, updates = jax.jit(train)(variables, image)
        before = variables["batch_stats"]["bn1"]["mean"]
        after = updates["batch_stats"]["bn1"]["mean"]
        assert np.array_equal(before, after) == frozen


@pytest.mark.parametrize(
    "stem, stride, kernel, size", [("imagenet", 1, 7, 7), ("small", 1, 3, 28), ("small", 2, 3, 14)]
)
def test_resnet_small_stem_keeps_small_images_large(stem, stride, kernel, size):
    module = ResNet18(width=2, stage_sizes=(1,), features=3, stem=stem, stem_stride=stride)
    image = jnp.zeros((1, 28, 28, 1))
    variables = jax.eval_shape(module.init, jax.random.key(0), image)
    assert variables["params"]["conv1"]["kernel"].shape == (kernel, kernel, 1, 2)
    _, state = jax.eval_shape(
        functools.partial(module.apply, capture_intermediates=True, mutable=["intermediates"]),
        variables,
        image,
    )
    assert state["intermediates"]["layer1_0"]["__call__"][0].shape == (1, size, size, 2)


def test_safetensors_reader_handles_bfloat16_and_float16(tmp_path):
    values = np.array([[1.5, -2.0], [0.25, 3.0]], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    f16 = values.astype(np.float16).tobytes()
    header = {
        "a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
        "b": {"dtype": "F16", "shape": [2, 2], "data_offsets": [8, 16]},
        "__metadata__": {"format": "pt"},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bf16 + f16)
    state = pretrained.read_state_dict(path)
    np.testing.assert_array_equal(state["a"], values)
    np.testing.assert_array_equal(state["b"], values)


def test_unreadable_files_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        pretrained.read_state_dict(tmp_path / "nope.safetensors")
    bad = tmp_path / "w.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="unknown format"):
        pretrained.read_state_dict(bad)
    with pytest.raises(ConfigError, match="unknown weights layout 'timm'"):
        pretrained.convert_state_dict({}, {}, "timm")


# --- `pretrained` in a tower's encoder_kwargs: weights loaded at init ---------------------


def _clip_two_tower(image_kwargs, text_kwargs=None):
    spec = DataSpec(
        modalities=("image", "text"), vocab_size=64, max_text_len=12, image_shape=(32, 32, 3)
    )
    config = ml_collections.ConfigDict(
        {
            "name": "two_tower",
            "image_encoder": "open_clip_vit",
            "text_encoder": "open_clip_text",
            "embed_dim": 16,
            "encoder_kwargs": {
                "image": {"patch_size": 8, "width": 16, "layers": 2, "num_heads": 2, **image_kwargs},
                "text": {"context_length": 12, "width": 16, "layers": 2, "num_heads": 2,
                         **(text_kwargs or {})},
            },
        }
    )  # fmt: skip
    return build_model(config, spec)


def test_two_tower_loads_both_towers_at_init(reference):
    clip = str(FIXTURES / "clip.safetensors")
    model = _clip_two_tower({"pretrained": clip}, {"pretrained": {"path": clip}})
    image = jnp.asarray(reference["clip_image"], jnp.float32)
    text = jnp.asarray(reference["clip_text"])
    batch = {"image": image, "text": text, "text_mask": text > 0}
    variables = jax.jit(model.init)(jax.random.key(0), batch)
    apply = jax.jit(model.apply)
    outputs = apply(variables, batch)
    for tower in ("image", "text"):
        want = reference[f"clip_{tower}_features"]
        want = want / np.linalg.norm(want, axis=-1, keepdims=True)
        np.testing.assert_allclose(outputs[f"emb/{tower}"], want, atol=TOLERANCE)
    # apply uses the variables it is given, not the file
    zeroed = jax.tree.map(jnp.zeros_like, variables)
    assert not np.any(apply(zeroed, batch)["emb/image"])


def test_pretrained_setting_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"encoder_kwargs.image\).*does not exist"):
        _clip_two_tower({"pretrained": str(tmp_path / "none.safetensors")})
    with pytest.raises(ConfigError, match="valid: a file path, or a dict with 'path'"):
        _clip_two_tower({"pretrained": {"file": "x"}})
    wrong = _clip_two_tower({"pretrained": str(FIXTURES / "clip.safetensors"), "layers": 1})
    batch = {"image": jnp.zeros((1, 32, 32, 3)), "text": jnp.ones((1, 12), jnp.int32)}
    with pytest.raises(ConfigError, match=r"unexpected \(12\): visual.transformer.resblocks.1"):
        jax.eval_shape(wrong.init, jax.random.key(0), batch)
