"""Contrastive learning: CLIP/SigLIP losses (sharded and not), two-tower model and encoders,
retrieval metrics, zero-shot evaluation, and a tiny end-to-end shapes CLIP run."""

import json
import math
import os
import types

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import jit_apply
from jax.sharding import NamedSharding, PartitionSpec

from configs import shapes_clip
from crossjax import train as train_lib
from crossjax.data.spec import DataSpec
from crossjax.data.text import Vocabulary
from crossjax.errors import ConfigError
from crossjax.evaluators import EVALUATORS, EvalContext
from crossjax.evaluators.prompt_files import read_string_list
from crossjax.losses import LOSSES, LossContext, build_loss
from crossjax.losses.contrastive import (
    sharded_sigmoid_contrastive_loss,
    sharded_softmax_contrastive_loss,
    sigmoid_contrastive_loss,
    softmax_contrastive_loss,
)
from crossjax.metrics.retrieval import retrieval_metrics
from crossjax.models import build_model
from crossjax.models.encoders import IMAGE_ENCODERS
from crossjax.models.transformer import (
    TEXT_ENCODERS,
    PatchEmbed,
    TransformerTextEncoder,
    ViTImageEncoder,
    patchify,
)
from crossjax.sharding import make_mesh

CTX = LossContext(step=jnp.int32(0), rng=jax.random.key(0))
SPEC = DataSpec(
    modalities=("image", "text"),
    num_classes=5,
    vocab_size=40,
    max_text_len=8,
    image_shape=(8, 8, 3),
)


def unit_rows(key, shape):
    x = jax.random.normal(key, shape)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def two_tower_config(**overrides) -> ml_collections.ConfigDict:
    fields = {
        "name": "two_tower",
        "image_encoder": "vit",
        "text_encoder": "transformer",
        "encoder_kwargs": {
            "image": {"patch_size": 4, "width": 8, "depth": 1, "num_heads": 2},
            "text": {"width": 8, "depth": 1, "num_heads": 2},
        },
        "embed_dim": 6,
    }
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def toy_batch(b: int = 3) -> dict:
    k1, k2 = jax.random.split(jax.random.key(1))
    lengths = jnp.array([1, 5, 8, 3, 8, 2][:b])
    return {
        "image": jax.random.uniform(k1, (b, *SPEC.image_shape)),
        "text": jax.random.randint(k2, (b, SPEC.max_text_len), 2, SPEC.vocab_size),
        "text_mask": jnp.arange(SPEC.max_text_len)[None, :] < lengths[:, None],
    }


# -- losses ------------------------------------------------------------------------------
def test_clip_with_equal_logits_is_log_batch_size():
    b = 6
    emb = jnp.tile(jnp.eye(4)[:1], (b, 1))  # every pair has cosine 1: all logits equal
    outputs = {"emb/image": emb, "emb/text": emb, "logit_scale": jnp.float32(7.0)}
    loss, metrics = LOSSES.get("clip")(outputs, {}, CTX)
    np.testing.assert_allclose(loss, np.full(b, math.log(b)), rtol=1e-6)  # each example
    np.testing.assert_allclose(metrics["positive_cosine"], 1.0, rtol=1e-6)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_siglip_with_mutually_orthogonal_embeddings():
    """All 2B image and text embeddings orthogonal: every logit is t * 0 + b = -10, so
    each image pays softplus(10) for its positive and softplus(-10) per negative."""
    b = 32
    basis = jnp.eye(2 * b)
    outputs = {
        "emb/image": basis[:b],
        "emb/text": basis[b:],
        "logit_scale": jnp.float32(10.0),
        "logit_bias": jnp.float32(-10.0),
    }
    loss, metrics = LOSSES.get("siglip")(outputs, {}, CTX)
    expected = _softplus(10.0) + (b - 1) * _softplus(-10.0)
    np.testing.assert_allclose(loss, np.full(b, expected), rtol=1e-6)
    np.testing.assert_allclose(loss, 10.00145, atol=1e-5)
    assert float(metrics["logit_bias"]) == -10.0


def test_siglip_with_matching_pairs():
    """Image i == text i, all orthonormal: positives have logit 10 - 10 = 0, negatives -10."""
    b = 8
    emb = jnp.eye(b)
    outputs = {
        "emb/image": emb,
        "emb/text": emb,
        "logit_scale": jnp.float32(10.0),
        "logit_bias": jnp.float32(-10.0),
    }
    loss, _ = LOSSES.get("siglip")(outputs, {}, CTX)
    np.testing.assert_allclose(loss, _softplus(0.0) + (b - 1) * _softplus(-10.0), rtol=1e-6)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
@pytest.mark.parametrize("num_devices", [1, 8])
def test_masked_rows_are_neither_anchors_nor_negatives(loss, num_devices):
    """With a padding mask, the valid rows' values equal the loss of the valid rows alone,
    and the padded rows get 0 (and no NaN gradient), sharded or not."""
    mesh = make_mesh(num_devices)
    b, d = 16, 8
    k1, k2 = jax.random.split(jax.random.key(5))
    image, text = unit_rows(k1, (b, d)), unit_rows(k2, (b, d))
    mask = jnp.arange(b) % 3 != 1  # every third row is padding
    outputs = {
        "emb/image": image,
        "emb/text": text,
        "logit_scale": jnp.float32(5.0),
        "logit_bias": jnp.float32(-2.0),
    }
    ctx = LossContext(step=jnp.int32(0), rng=jax.random.key(0), mask=mask, mesh=mesh)
    values, _ = jax.jit(lambda o, c: LOSSES.get(loss)(o, {}, c))(outputs, ctx)
    alone = {k: v[mask] if v.ndim else v for k, v in outputs.items()}
    reference, _ = LOSSES.get(loss)(alone, {}, CTX)
    np.testing.assert_allclose(values[mask], reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(values[~mask], 0.0)
    grads = jax.jit(jax.grad(lambda o, c: jnp.sum(LOSSES.get(loss)(o, {}, c)[0])))(outputs, ctx)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    np.testing.assert_array_equal(grads["emb/image"][~mask], 0.0)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_sharded_loss_equals_single_device_value_and_grad(loss):
    mesh = make_mesh(8)
    b, d = 32, 16
    k1, k2 = jax.random.split(jax.random.key(3))
    image, text = unit_rows(k1, (b, d)), unit_rows(k2, (b, d))
    scale, bias = jnp.float32(4.0), jnp.float32(-3.0)
    # Values are per example (B,); their mean is the batch loss whose gradient is compared.
    if loss == "clip":
        single = lambda i, t, s, c: jnp.mean(softmax_contrastive_loss(i, t, s))  # noqa: E731
        sharded = lambda i, t, s, c: jnp.mean(sharded_softmax_contrastive_loss(i, t, s, mesh))  # noqa: E731
    else:
        single = lambda i, t, s, c: jnp.mean(sigmoid_contrastive_loss(i, t, s, c))  # noqa: E731
        sharded = lambda i, t, s, c: jnp.mean(  # noqa: E731
            sharded_sigmoid_contrastive_loss(i, t, s, c, mesh)
        )
    want, want_grads = jax.jit(jax.value_and_grad(single, argnums=(0, 1, 2, 3)))(
        image, text, scale, bias
    )
    data = NamedSharding(mesh, PartitionSpec("data"))
    image_s, text_s = jax.device_put(image, data), jax.device_put(text, data)
    got, got_grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2, 3)))(
        image_s, text_s, scale, bias
    )
    assert len(got_grads[0].sharding.device_set) == 8
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    # The registered loss takes the sharded path through ctx.mesh too.
    outputs = {"emb/image": image_s, "emb/text": text_s, "logit_scale": scale, "logit_bias": bias}
    ctx = LossContext(step=jnp.int32(0), rng=jax.random.key(0), mesh=mesh)
    value, _ = jax.jit(lambda o: build_loss([(loss, 1.0)])(o, {}, ctx))(outputs)
    np.testing.assert_allclose(value, want, atol=1e-5, rtol=1e-5)


def test_contrastive_losses_are_batch_level():
    assert not build_loss([("clip", 1.0)]).per_example_only
    assert not build_loss([("siglip", 1.0)]).per_example_only


# -- retrieval metrics --------------------------------------------------------------------
def test_retrieval_metrics_two_captions_per_image():
    # 3 images, 6 captions; captions 2i and 2i + 1 describe image i.
    text_to_image = np.array([0, 0, 1, 1, 2, 2])
    similarity = np.array(
        [
            [0.1, 0.9, 0.8, 0.0, 0.0, 0.0],  # image 0: own caption 1 is top -> i2t rank 1
            [0.9, 0.0, 0.2, 0.5, 0.0, 0.6],  # image 1: best own 0.5; 0.9, 0.6 above -> rank 3
            [0.0, 0.0, 0.7, 0.0, 0.7, 0.1],  # image 2: own 0.7 ties caption 2 -> rank 2
        ]
    )
    m = retrieval_metrics(similarity, text_to_image, ks=(1, 2, 5))
    # i2t ranks (1, 3, 2)
    assert m["i2t_r1"] == pytest.approx(1 / 3)
    assert m["i2t_r2"] == pytest.approx(2 / 3)
    assert m["i2t_r5"] == pytest.approx(1.0)
    assert m["i2t_mean_rank"] == pytest.approx(2.0)
    assert m["i2t_median_rank"] == pytest.approx(2.0)
    # t2i: column j ranks image text_to_image[j] among the 3 images (ties count against):
    # c0 own 0.1 < 0.9 -> 2; c1 own 0.9 -> 1; c2 own 0.2 < 0.8, 0.7 -> 3;
    # c3 own 0.5 -> 1; c4 own 0.7 -> 1; c5 own 0.1 < 0.6 -> 2.
    assert m["t2i_r1"] == pytest.approx(3 / 6)
    assert m["t2i_r2"] == pytest.approx(5 / 6)
    assert m["t2i_mean_rank"] == pytest.approx(10 / 6)
    assert m["t2i_median_rank"] == pytest.approx(1.5)


def test_retrieval_metrics_give_a_collapsed_model_the_worst_ranks():
    m = retrieval_metrics(np.zeros((4, 4)), np.arange(4))
    assert m["i2t_r1"] == 0.0 and m["t2i_r1"] == 0.0
    assert m["i2t_mean_rank"] == 4.0 and m["t2i_mean_rank"] == 4.0


# -- encoders and the two-tower model ------------------------------------------------------
def test_registries_hold_the_new_encoders():
    assert IMAGE_ENCODERS.get("vit") is ViTImageEncoder
    assert TEXT_ENCODERS.get("transformer") is TransformerTextEncoder
    assert {"bow", "transformer", "lstm", "gru"} <= set(TEXT_ENCODERS.names())


def test_patchify_is_row_major_patches():
    image = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    patches = patchify(image, 2)
    chex.assert_shape(patches, (2, 4, 4))
    np.testing.assert_array_equal(patches[0, 1], image[0, 0:2, 2:4, 0].reshape(-1))


@pytest.mark.parametrize("use_bias", [False, True])
def test_patch_embed_is_the_stride_p_convolution_with_its_parameters(use_bias):
    """Same parameter names, shapes and initial values as nn.Conv's, and the same outputs
    (row-major patches, as torch's conv then flatten(2))."""
    image = jax.random.normal(jax.random.key(1), (2, 12, 8, 3))
    conv = nn.Conv(5, (4, 4), strides=(4, 4), padding="VALID", use_bias=use_bias)
    embed = PatchEmbed(5, 4, use_bias=use_bias)
    variables = embed.init(jax.random.key(0), image)
    conv_variables = conv.init(jax.random.key(0), image)
    chex.assert_trees_all_equal(variables, conv_variables)
    variables = jax.tree.map(lambda x: x + 0.1, variables)  # a non-zero bias too
    want = conv.apply(variables, image).reshape(2, 6, 5)
    np.testing.assert_allclose(embed.apply(variables, image), want, atol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_encoder_shapes_and_text_padding_is_ignored(pool):
    batch = toy_batch()
    vit = ViTImageEncoder(patch_size=4, width=8, depth=2, num_heads=2, pool=pool, features=5)
    params = jax.jit(vit.init)(jax.random.key(0), batch["image"])
    chex.assert_shape(jax.jit(vit.apply)(params, batch["image"]), (3, 5))
    text_enc = TransformerTextEncoder(vocab_size=40, width=8, depth=2, num_heads=2, pool=pool)
    params = jax.jit(text_enc.init)(jax.random.key(0), batch["text"], batch["text_mask"])
    apply = jax.jit(text_enc.apply)
    out = apply(params, batch["text"], batch["text_mask"])
    chex.assert_shape(out, (3, 128))
    scrambled = jnp.where(batch["text_mask"], batch["text"], 39)  # change only padding
    np.testing.assert_allclose(apply(params, scrambled, batch["text_mask"]), out, atol=1e-6)


@pytest.mark.parametrize(
    "image_encoder,text_encoder,image_kwargs",
    [("vit", "transformer", None), ("cnn", "bow", {"channels": (4,)}), ("mlp", "bow", {})],
)
def test_two_tower_outputs(image_encoder, text_encoder, image_kwargs):
    overrides = {"image_encoder": image_encoder, "text_encoder": text_encoder}
    if image_kwargs is not None:
        overrides["encoder_kwargs"] = {"image": image_kwargs}
    model = build_model(two_tower_config(**overrides), SPEC)
    batch = toy_batch()
    variables = jax.jit(model.init)(jax.random.key(0), batch)
    out = jax.jit(model.apply)(variables, batch)
    chex.assert_shape([out["emb/image"], out["emb/text"]], (3, 6))
    chex.assert_type([out["emb/image"], out["emb/text"]], jnp.float32)
    np.testing.assert_allclose(jnp.linalg.norm(out["emb/image"], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(out["emb/text"], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["logit_scale"], 1 / 0.07, rtol=1e-5)
    np.testing.assert_allclose(out["logit_bias"], -10.0)
    # One tower at a time gives the same embeddings.
    image = jit_apply(model)(variables, batch["image"], method="encode_image")
    text = jit_apply(model)(variables, batch["text"], batch["text_mask"], method="encode_text")
    np.testing.assert_allclose(image, out["emb/image"], atol=1e-6)
    np.testing.assert_allclose(text, out["emb/text"], atol=1e-6)


def test_logit_scale_is_clamped_at_100():
    model = build_model(two_tower_config(init_temperature=math.log(1000.0)), SPEC)
    variables = model.init(jax.random.key(0), toy_batch())
    assert float(model.apply(variables, toy_batch())["logit_scale"]) == pytest.approx(100.0)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"image_encoder": "resnet"}, "unknown image encoder 'resnet'"),
        ({"text_encoder": "rnn"}, "unknown text encoder 'rnn'"),
        ({"encoder_kwargs": {"audio": {}}}, "encoder_kwargs has key 'audio'"),
        ({"encoder_kwargs": {"image": {"depht": 2}}}, "has no field 'depht'"),
        ({"encoder_kwargs": {"text": {"pool": "max"}}}, "pool='max'"),
        ({"embed_dim": 0}, "embed_dim=0"),
        ({"init_bias": "low"}, "init_bias='low'"),
        ({"temperature": 1.0}, "no field 'temperature'"),
    ],
)
def test_build_model_rejects_bad_fields(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_model(two_tower_config(**overrides), SPEC)


def test_build_model_needs_both_modalities():
    with pytest.raises(ConfigError, match="modality 'text'"):
        build_model(two_tower_config(), DataSpec(modalities=("image",), image_shape=(8, 8, 3)))


# -- zero-shot --------------------------------------------------------------------------
class _ColourWords:
    """A stand-in two-tower model: an image's embedding is its one-hot colour; a text's is
    the one-hot of the colour word it contains (ids 2..4)."""

    def apply(self, variables, text, mask, method=None):
        assert method == "encode_text"
        return self.encode_text(text, mask)

    def encode_text(self, text, mask):
        hits = jnp.stack([jnp.any((text == 2 + k) & mask, axis=-1) for k in range(3)], -1)
        emb = hits.astype(jnp.float32) + 1e-3
        return emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)


def _toy_eval_context(image_emb, batch):
    """An EvalContext over one eval batch whose model outputs `image_emb` (N, D)."""
    vocab = Vocabulary(["red", "green", "blue", "a", "picture", "of"])  # ids 2, 3, 4, ...
    n = len(image_emb)

    def batches():
        yield batch, np.ones(n, bool)

    return EvalContext(
        config=None,
        spec=types.SimpleNamespace(max_text_len=6),
        params={},
        step=0,
        workdir=None,
        writer=None,
        predict=lambda b: {"emb/image": np.asarray(image_emb, np.float32)},
        batches=batches,
        model=_ColourWords(),
        mesh=None,
        vocab=vocab,
    )


def test_zeroshot_on_a_toy_case():
    colour = np.array([[0, -1], [1, -1], [2, 2], [2, -1], [1, 0]])
    num_objects = np.array([1, 1, 2, 1, 2])
    image_emb = np.eye(3)[[0, 1, 2, 0, 1]]  # image 3 looks red although it is blue
    batch = {"attr/color": colour, "attr/num_objects": num_objects, "label": colour[:, 0]}
    ctx = _toy_eval_context(image_emb, batch)
    metrics = EVALUATORS.get("zeroshot")(
        ctx,
        class_names=["red", "green", "blue"],
        templates=["a {}", "a picture of {}"],
        label_key="attr/color",
        index=0,
        filter_key="attr/num_objects",
        filter_value=1,
        name="zs",
    )
    assert metrics == {"zs/accuracy": pytest.approx(2 / 3), "zs/num_examples": 3.0}
    metrics = EVALUATORS.get("zeroshot")(
        ctx, class_names_from="crossjax.data.shapes:COLORS", templates=["{}"]
    )  # all five rows by `label`; COLORS starts red, green, blue
    assert metrics["zeroshot/accuracy"] == pytest.approx(4 / 5)
    with pytest.raises(ConfigError, match="exactly one of"):
        EVALUATORS.get("zeroshot")(ctx)


def test_zeroshot_reads_class_names_and_templates_from_files(tmp_path):
    colour = np.array([0, 1, 2, 0, 1])
    ctx = _toy_eval_context(np.eye(3)[[0, 1, 2, 2, 1]], {"label": colour})
    zeroshot = EVALUATORS.get("zeroshot")
    want = zeroshot(ctx, class_names=["red", "green", "blue"], templates=["a {}", "{}"])
    assert want["zeroshot/accuracy"] == pytest.approx(4 / 5)
    (tmp_path / "names.txt").write_text("# colours\nred\n\ngreen\nblue\n")
    (tmp_path / "t.json").write_text(json.dumps(["a {}", "{}"]))
    (tmp_path / "t.py").write_text('X = 1\nT = (lambda c: f"a {c}", lambda c: f"{c}")\n')
    for templates in ("t.json", "t.py"):
        got = zeroshot(
            ctx,
            class_names_file=str(tmp_path / "names.txt"),
            templates_file=str(tmp_path / templates),
        )
        assert got == want
    assert read_string_list(str(tmp_path / "t.py"), "f") == ["a {}", "{}"]
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    (tmp_path / "bad.txt").write_text("a photo of a\n")
    names = {"class_names_file": str(tmp_path / "names.txt")}
    cases = [
        ({"class_names_file": str(tmp_path / "none.txt")}, "class_names_file=.*does not exist"),
        ({"class_names_file": str(tmp_path / "empty.txt")}, "empty.txt lists nothing"),
        ({**names, "templates_file": str(tmp_path / "bad.txt")}, "'a photo of a' has no '{}'"),
        ({**names, "templates": ()}, "the list of templates is empty"),
        ({**names, "templates": ["{}"], "templates_file": "t.txt"}, "not both"),
        ({**names, "class_names": ["red"]}, "exactly one of"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ConfigError, match=match) as error:
            zeroshot(ctx, **kwargs)
        assert "\n" not in str(error.value)


def test_retrieval_evaluator_uses_every_real_caption():
    # Images are red, green, blue; captions (3 images, 2 slots, L=3) name their colour, and
    # image 1's second slot is padding. Were the padded caption used, its embedding (no
    # colour word) would tie with every image and spoil t2i_r1.
    red, green, blue, a = 2, 3, 4, 5
    captions = np.array(
        [[[a, red, 0], [red, 0, 0]], [[green, 0, 0], [0, 0, 0]], [[blue, 0, 0], [a, blue, 0]]]
    )
    ctx = _toy_eval_context(
        np.eye(3), {"captions": captions, "captions_mask": captions > 0, "label": np.arange(3)}
    )
    metrics = EVALUATORS.get("retrieval")(ctx)
    assert metrics["retrieval/i2t_r1"] == 1.0 and metrics["retrieval/t2i_r1"] == 1.0
    assert metrics["retrieval/t2i_mean_rank"] == 1.0
    limited = EVALUATORS.get("retrieval")(ctx, max_examples=2, name="r")
    assert limited["r/i2t_r1"] == 1.0 and "r/t2i_r5" in limited


def test_linear_probe_fits_the_first_half_and_scores_the_second():
    labels = np.arange(40) % 2
    rng = np.random.default_rng(0)
    emb = np.stack([labels * 2.0 - 1.0, rng.normal(size=40)], axis=1)  # axis 0 separates
    ctx = _toy_eval_context(emb, {"label": labels})
    metrics = EVALUATORS.get("linear_probe")(ctx)
    assert metrics == {
        "linear_probe/accuracy": 1.0,
        "linear_probe/num_fit": 20.0,
        "linear_probe/num_scored": 20.0,
    }


# -- end to end -------------------------------------------------------------------------
def test_tiny_shapes_clip_writes_retrieval_and_zeroshot_metrics(tmp_path):
    config = shapes_clip.get_config("tiny")
    train_lib.train_and_evaluate(config, str(tmp_path))
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    final = [r for r in records if r["split"] == "test"][-1]
    for key in (
        "clip",
        "retrieval/i2t_r1",
        "retrieval/i2t_r5",
        "retrieval/i2t_r10",
        "retrieval/t2i_r5",
        "retrieval/t2i_median_rank",
        "zeroshot_color/accuracy",
        "zeroshot_shape/accuracy",
    ):
        assert key in final and np.isfinite(final[key]), key
    assert 0.0 <= final["retrieval/i2t_r5"] <= 1.0
    assert final["zeroshot_color/num_examples"] > 0
