"""Training modes of pretrained towers: frozen parameters (LiT, linear probe), layer-wise
learning-rate decay, and configs/clip_vit_b32.py's variants run end to end on tiny files
with the converted random-weight CLIP of tests/fixtures/pretrained (its stand-in)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import jit_apply

from configs import clip_vit_b32
from crossjax import param_groups, runs
from crossjax import train as train_lib
from crossjax.config import base_config, validate_config
from crossjax.data.preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Preprocessor,
    image_normalization,
)
from crossjax.data.spec import DataSpec, dummy_batch
from crossjax.errors import ConfigError
from crossjax.models import build_model
from crossjax.models.clip_towers import CLIPVisionTransformer
from crossjax.models.hf_text import BertTextEncoder, GPT2TextEncoder
from crossjax.models.siglip_towers import SiglipVisionTransformer
from crossjax.models.transformer import ViTImageEncoder
from crossjax.sharding import make_mesh
from tests.test_cli import _run
from tests.test_real_data import _image, write_image_folder

CLIP = Path(__file__).parent / "fixtures" / "pretrained" / "clip.safetensors"
IMAGE = jnp.zeros((1, 32, 32, 3))
TEXT = jnp.ones((1, 12), jnp.int32)


def _params(module, *inputs):
    return jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"]


def _flat(tree) -> dict[str, object]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(param_groups.path_names(p)): v for p, v in leaves}


# -- layer-wise learning-rate decay ------------------------------------------------------------
def test_layer_decay_factors_of_an_open_clip_tower_by_path():
    vit = _params(CLIPVisionTransformer(patch_size=8, width=16, layers=2, num_heads=2), IMAGE)
    params = {"image_encoder": vit, "logit_scale": jnp.zeros(())}
    got = _flat(param_groups.layer_decay_factors(params, 0.5))
    assert got["image_encoder/conv1/kernel"] == 0.5**3  # embeddings: d ** (L + 1)
    assert got["image_encoder/class_embedding"] == got["image_encoder/ln_pre/scale"] == 0.5**3
    assert got["image_encoder/transformer/resblocks_0/attn/in_proj/kernel"] == 0.5**2
    assert got["image_encoder/transformer/resblocks_1/mlp/c_fc/bias"] == 0.5
    assert got["image_encoder/ln_post/bias"] == got["image_encoder/proj"] == 1.0
    assert got["logit_scale"] == 1.0  # outside the tower


@pytest.mark.parametrize(
    "module, inputs, first_block, embedding, head",
    [
        (BertTextEncoder(64, 16, 3, 2, 32, features=8), (TEXT, TEXT > 0),
         "encoder/layer_0/attention/self/query/kernel",
         "embeddings/word_embeddings/embedding", "pooler/dense/kernel"),
        (GPT2TextEncoder(64, 16, 3, 2, features=8), (TEXT, TEXT > 0),
         "h_0/attn/c_attn/kernel", "wpe/embedding", "ln_f/scale"),
        (SiglipVisionTransformer(8, 16, 3, 2, 32, features=8), (IMAGE,),
         "encoder/layers_0/mlp/fc1/kernel", "embeddings/patch_embedding/kernel",
         "head/probe"),
        (ViTImageEncoder(8, 16, 3, 2, features=8), (IMAGE,),
         "encoder/block_0/mlp_in/kernel", "encoder/pos_embedding", "encoder/proj/kernel"),
    ],
)  # fmt: skip
def test_layer_decay_knows_each_transformer_layout(module, inputs, first_block, embedding, head):
    got = _flat(param_groups.layer_decay_factors(_params(module, *inputs), 0.5))
    assert got[first_block] == 0.5**3 and got[embedding] == 0.5**4 and got[head] == 1.0
    assert set(got.values()) == {0.5**4, 0.5**3, 0.5**2, 0.5, 1.0}


def test_layer_decay_refuses_unknown_layouts():
    params = {"tower": {"transformer": {"resblocks_0": {"w": 1.0}}, "adapter": {"w": 1.0}}}
    with pytest.raises(ConfigError, match="cannot place parameter tower/adapter/w"):
        param_groups.layer_decay_factors(params, 0.5)
    with pytest.raises(
        ConfigError, match="needs a trainable transformer tower.*set layer_decay=1.0"
    ):
        param_groups.layer_decay_factors({"cnn": {"conv_0": {"kernel": 1.0}}}, 0.5)
    config = clip_vit_b32.get_config("tiny")
    config.optimizer.layer_decay = 1.5
    with pytest.raises(ConfigError, match="layer_decay=1.5; valid: 0 < value <= 1"):
        validate_config(config)


def _optimizer(**fields):
    config = base_config()
    config.optimizer.update(dict(schedule="constant", warmup_steps=0, grad_clip_norm=0.0))
    config.optimizer.update(fields)
    return train_lib.build_optimizer(config, 10)


def test_layer_decay_scales_each_parameters_learning_rate():
    params = {
        "enc": {"embed": jnp.ones(2), "layers_0": jnp.ones(2), "layers_1": jnp.ones(2)},
        "head": jnp.ones(2),
    }
    tx = _optimizer(name="sgd", b1=0.0, learning_rate=0.1, weight_decay=0.0, layer_decay=0.5)
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    for _ in range(2):  # step 0 of the schedule has learning rate 0
        updates, state = tx.update(grads, state, params)
    got = {k: float(v[0]) for k, v in _flat(updates).items()}
    want = {"enc/embed": 0.125, "enc/layers_0": 0.25, "enc/layers_1": 0.5, "head": 1.0}
    assert got == pytest.approx({k: -0.1 * v for k, v in want.items()})
    # With a frozen tower: it gets nothing; the others keep their factors.
    tx = _optimizer(
        name="sgd", b1=0.0, learning_rate=0.1, weight_decay=0.0, layer_decay=0.5, frozen=("head",)
    )
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
    got = {k: float(v[0]) for k, v in _flat(updates).items()}
    assert got == pytest.approx({**{k: -0.1 * v for k, v in want.items()}, "head": 0.0})


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_sgd_and_adam_apply_weight_decay_as_an_l2_gradient_term(name):
    """torch.optim.SGD/Adam(weight_decay=wd): the step sees grad + wd * param."""
    params = {"w": jnp.array([2.0, -1.0])}
    grads = {"w": jnp.array([0.5, 0.25])}
    decayed = _optimizer(name=name, b1=0.9, learning_rate=0.1, weight_decay=0.01)
    plain = _optimizer(name=name, b1=0.9, learning_rate=0.1, weight_decay=0.0)
    l2_grads = {"w": grads["w"] + 0.01 * params["w"]}
    got, want = decayed.init(params), plain.init(params)
    for _ in range(3):
        updates, got = decayed.update(grads, got, params)
        reference, want = plain.update(l2_grads, want, params)
    np.testing.assert_allclose(updates["w"], reference["w"], rtol=1e-6)
    assert float(jnp.abs(updates["w"]).sum()) > 0  # past the schedule's zero first step


# -- frozen parameters -------------------------------------------------------------------------
def test_frozen_parameters_get_no_update_and_no_optimizer_state():
    params = {"image_encoder": {"w": jnp.full(3, 2.0)}, "image_encoder2": {"w": jnp.ones(3)}}
    tx = _optimizer(name="adamw", weight_decay=0.5, learning_rate=0.1, frozen=("image_encoder",))
    state = tx.init(params)
    # Adam's two moments for the trainable vector only (plus counts), none for the frozen.
    moments = [x for x in jax.tree.leaves(state) if getattr(x, "shape", ()) == (3,)]
    assert len(moments) == 2
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
    assert not np.any(updates["image_encoder"]["w"])  # no weight decay, no momentum
    assert np.all(np.asarray(updates["image_encoder2"]["w"]) < 0)  # a whole name, not a prefix
    with pytest.raises(
        ConfigError, match="names 'text', which matches no parameter.*: image_encoder, image"
    ):
        _optimizer(frozen=("text",)).init(params)
    with pytest.raises(ConfigError, match=r"optimizer.frozen=\['image_encoder', ''\]; valid"):
        param_groups.parse_frozen(["image_encoder", ""])


def test_frozen_parameters_keep_their_bits_and_stop_their_gradients():
    params = {"a": jnp.array([-0.0, 1.0]), "b": jnp.array([-0.0, 1.0])}
    new = param_groups.apply_updates(params, jax.tree.map(jnp.zeros_like, params), ("a",))
    assert np.signbit(new["a"][0]) and not np.signbit(new["b"][0])  # p + 0 loses -0.0

    def loss(p):
        p = param_groups.stop_frozen_gradients(p, ("a",))
        return jnp.sum(p["a"] * p["b"])

    grads = jax.grad(loss)(params)
    assert not np.any(grads["a"]) and np.array_equal(grads["b"], params["a"])


def test_a_frozen_tower_has_zero_gradients_and_no_backward_pass():
    spec = DataSpec(
        modalities=("image", "text"), vocab_size=64, max_text_len=12, image_shape=(32, 32, 3)
    )
    rng = np.random.default_rng(0)
    batch = jax.tree.map(jnp.asarray, dummy_batch(spec, 8))
    batch["image"] = jnp.asarray(rng.standard_normal(batch["image"].shape), jnp.float32)
    batch["text"] = jnp.asarray(rng.integers(1, 64, batch["text"].shape), jnp.int32)
    flops = {}
    for variant in ("tiny", "lit_tiny"):
        config = clip_vit_b32.get_config(variant)  # random weights: pretrained=""
        exp = train_lib.Experiment(config, types.SimpleNamespace(spec=spec), make_mesh(1))
        params = exp.init().params
        grads_fn = jax.jit(exp._grads)
        _, _, grads = grads_fn(params, batch, jnp.zeros((), jnp.int32))
        frozen = jax.tree.leaves(grads["image_encoder"])
        if variant == "lit_tiny":
            assert not any(np.any(g) for g in frozen)
        else:
            assert all(np.any(g) for g in frozen)
        compiled = grads_fn.lower(params, batch, jnp.zeros((), jnp.int32)).compile()
        flops[variant] = compiled.cost_analysis()["flops"]
    assert flops["lit_tiny"] < 0.7 * flops["tiny"]  # the image tower's backward is skipped


def test_two_tower_on_labelled_images_alone_keeps_its_text_tower():
    # Zero-shot data without captions: a tokenizer gives the vocabulary, the model still
    # has its text tower (for the prompts) and embeds the images alone.
    spec = DataSpec(modalities=("image",), vocab_size=64, max_text_len=12, image_shape=(32, 32, 3))
    model = build_model(clip_vit_b32.get_config("zeroshot_tiny").model, spec)
    variables = jax.jit(model.init)(jax.random.key(0), {"image": IMAGE})
    assert {"image_encoder", "text_encoder"} <= set(variables["params"])
    outputs = jit_apply(model)(variables, {"image": IMAGE})
    assert "emb/text" not in outputs and outputs["emb/image"].shape == (1, 16)
    prompts = jit_apply(model)(variables, TEXT, TEXT > 0, method="encode_text")
    assert prompts.shape == (1, 16)


def test_images_are_normalised_with_the_configs_mean_and_std():
    pixels = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3) * 20
    mean, std = image_normalization(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    clip = Preprocessor({"image": "image"}, ("image",), None, 0, 0, image_mean=mean, image_std=std)
    want = (pixels / 255.0 - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
    np.testing.assert_allclose(clip({"image": pixels})["image"], want, rtol=1e-6)
    plain = Preprocessor({"image": "image"}, ("image",), None, 0, 0)
    np.testing.assert_allclose(plain({"image": pixels})["image"], pixels / 255.0, rtol=1e-6)
    with pytest.raises(ConfigError, match="have 3 values but the images have 1 channels"):
        clip({"image": pixels[..., :1]})
    with pytest.raises(ConfigError, match="one number per channel each"):
        image_normalization((0.5, 0.5), (0.5,))
    with pytest.raises(ConfigError, match="std > 0"):
        image_normalization((0.5,), (0.0,))


# -- configs/clip_vit_b32.py on tiny files -----------------------------------------------------
WORDS = [f"word{n}" for n in range(70)]


def write_clip_coco(root: Path, num_images: int = 24) -> Path:
    """COCO captions of `num_images` images whose captions use 70 words (the 64-word
    vocabulary of the tiny config is full, as the fixture's 64-id text tower needs)."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(num_images):
        _image(root / "images" / f"{i}.png", 30 + i, 40, seed=i)
        images.append({"id": i, "file_name": f"{i}.png"})
        for c in range(2):
            words = [WORDS[(10 * i + 3 * c + 7 * k) % len(WORDS)] for k in range(10)]
            annotations.append({"id": len(annotations), "image_id": i, "caption": " ".join(words)})
    path = root / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def _tiny(variant: str, tmp_path: Path) -> ml_collections.ConfigDict:
    config = clip_vit_b32.get_config(variant)
    config.num_devices = 1
    config.data.data_dir = str(tmp_path / "data")
    for tower in config.model.encoder_kwargs.values():
        tower.pretrained = str(CLIP)
    return config


def test_lit_keeps_the_image_tower_bit_identical_and_moves_the_text_tower(tmp_path):
    config = _tiny("lit_tiny", tmp_path)
    config.data.source.path = str(write_clip_coco(tmp_path / "coco"))
    config.data.source.images = str(tmp_path / "coco" / "images")
    workdir = tmp_path / "run"
    metrics = train_lib.train_and_evaluate(config, str(workdir))["test"]
    assert np.isfinite(metrics["loss"]) and "retrieval/i2t_r1" in metrics
    exp, step, trained = runs.restore_run(workdir)
    assert step == config.num_train_steps
    start = exp.init().params  # the converted checkpoint, loaded at init
    image, start_image = _flat(trained["image_encoder"]), _flat(start["image_encoder"])
    for name, value in start_image.items():
        a, b = np.asarray(value), np.asarray(image[name])
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32)), name
    text, start_text = _flat(trained["text_encoder"]), _flat(start["text_encoder"])
    moved = [k for k in start_text if not np.array_equal(start_text[k], text[k])]
    assert len(moved) == len(start_text)  # every text weight trained


def test_clip_vit_b32_variants_run_on_tiny_files(tmp_path):
    folder = tmp_path / "folder"
    write_image_folder(folder)
    # A linear probe: only the classifier head moves.
    config = _tiny("probe_tiny", tmp_path)
    config.data.source.path = str(folder)
    train_lib.train_and_evaluate(config, str(tmp_path / "probe"))
    exp, _, trained = runs.restore_run(tmp_path / "probe")
    start = exp.init().params
    assert jax.tree.all(
        jax.tree.map(np.array_equal, start["encoders_image"], trained["encoders_image"])
    )
    assert not np.array_equal(start["head"]["kernel"], trained["head"]["kernel"])
    # Zero-shot of the pretrained towers, evaluation only, names and templates from files.
    # Straight on the labelled image folder (no captions): the pretrained tokenizer alone
    # gives the prompts their ids. A 64-entry WordPiece vocabulary fits the fixture's
    # 64-id text tower.
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", ".", "a", "of", "photo", "drawing"]
    words += ["circle", "square", "triangle"]
    words += [f"w{i}" for i in range(64 - len(words))]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    (tmp_path / "names.txt").write_text("circle\nsquare\ntriangle\n")
    (tmp_path / "templates.txt").write_text("a photo of a {}.\na drawing of a {}.\n")
    config = _tiny("zeroshot_tiny", tmp_path)
    config.data.source.path = str(folder)
    config.data.modalities = ("image",)
    config.data.tokenizer = {"kind": "wordpiece", "vocab": str(tmp_path / "vocab.txt")}
    zeroshot = {"class_names_file": str(tmp_path / "names.txt"),
                "templates_file": str(tmp_path / "templates.txt")}  # fmt: skip
    config.evaluators = (("zeroshot", zeroshot),)
    metrics = runs.evaluate_config(config, tmp_path / "zs", "test", losses=False)
    assert set(metrics) == {"zeroshot/accuracy", "zeroshot/num_examples"}
    assert metrics["zeroshot/num_examples"] > 0


def test_the_docs_retrieval_command_evaluates_the_pretrained_weights(tmp_path):
    captions = write_clip_coco(tmp_path / "coco")
    code, out, err = _run(
        "evaluate",
        "--config=configs/clip_vit_b32.py:tiny",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.data_dir={tmp_path / 'data'}",
        f"--config.data.source.path={captions}",
        f"--config.data.source.images={captions.parent / 'images'}",
        f"--config.model.encoder_kwargs.image.pretrained={CLIP}",
        f"--config.model.encoder_kwargs.text.pretrained={CLIP}",
    )
    assert code == 0, err
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["step"] == 0 and metrics["split"] == "test"
    assert 0 <= metrics["retrieval/i2t_r1"] <= 1 and metrics["loss"] > 0
