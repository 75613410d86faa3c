"""The fusion zoo (every method in FUSIONS), the robustness evaluator on a hand-built case
whose answers are known, and the comparison module on tiny configs."""

import functools
import json
import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import parameterized

from crossjax import compare
from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.evaluators import EVALUATORS, EvalContext
from crossjax.evaluators.robustness import normalised_auc
from crossjax.models import build_model
from crossjax.models.fusion_methods import FUSIONS, LowRankFusion, TensorFusion

METHODS = FUSIONS.names()
ZOO = [m for m in METHODS if m != "concat"]  # concat keeps the caller's order on purpose
WIDTHS = {"image": 3, "text": 4, "audio": 5}  # unequal on purpose
SMALL = {  # fusion_kwargs that keep every method tiny
    "concat": {},
    "early_concat": {"hidden": (8,), "features": 6},
    "sum": {"project_to": 6},
    "gated": {"features": 6},
    "tfn": {"dim": 2},
    "lmf": {"rank": 2, "features": 6},
    "film": {"features": 6},
    "cross_attention": {"features": 8, "num_heads": 2},
}
SUBSETS = [("image",), ("text", "audio"), ("image", "text", "audio")]


def expected_width(method: str, modalities) -> int:
    m = len(modalities)
    return {
        "concat": sum(WIDTHS[x] + 1 for x in modalities),
        "early_concat": 6,
        "sum": 6 + m,
        "gated": 6 + m,
        "tfn": 3**m,
        "lmf": 6,
        "film": 6 + m,
        "cross_attention": 8 + m,
    }[method]


def embeddings_and_presence(modalities, batch_size=4, seed=0):
    """Dicts in sorted key order, as jax.jit hands them over (concat keeps dict order)."""
    modalities = sorted(modalities)
    keys = jax.random.split(jax.random.key(seed), len(modalities))
    embeddings = {
        m: jax.random.normal(k, (batch_size, WIDTHS[m]))
        for m, k in zip(modalities, keys, strict=True)
    }
    # Row 0 has everything, row 1 lacks the first modality, row 2 the last, row 3 all.
    present = {}
    for i, m in enumerate(modalities):
        row = np.ones(batch_size, bool)
        row[3] = False
        row[1] = row[1] and i != 0
        row[2] = row[2] and i != len(modalities) - 1
        present[m] = jnp.asarray(row)
    return embeddings, present


@functools.cache
def initialised(method: str, modalities: tuple[str, ...]):
    """(fusion, variables): initialised once per test session (compiling is the slow part)."""
    fusion = FUSIONS.get(method)(**SMALL[method])
    embeddings, present = embeddings_and_presence(modalities)
    return fusion, jax.jit(fusion.init)(jax.random.key(1), embeddings, present)


def check_fusion(apply, method, modalities):
    """Output shape, finiteness, and no influence of the values in absent slots."""
    fusion, variables = initialised(method, tuple(modalities))
    embeddings, present = embeddings_and_presence(modalities)
    out = apply(fusion, variables, embeddings, present)
    chex.assert_shape(out, (4, expected_width(method, modalities)))
    chex.assert_tree_all_finite(out)
    # NaN in every absent slot: the output must not change (and stay finite).
    nan = {m: jnp.where(present[m][:, None], e, jnp.nan) for m, e in embeddings.items()}
    chex.assert_trees_all_close(apply(fusion, variables, nan, present), out, atol=1e-6)
    return out, fusion.apply(variables, embeddings, present)


class FusionModuleTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(m, m) for m in METHODS])
    def test_jit_equals_no_jit_and_absent_values_have_no_influence(self, method):
        def apply(fusion, *args):
            return self.variant(fusion.apply)(*args)

        out, reference = check_fusion(apply, method, ("image", "text", "audio"))
        chex.assert_trees_all_close(out, reference, atol=1e-5)


@pytest.mark.parametrize("modalities", SUBSETS[:2])
@pytest.mark.parametrize("method", METHODS)
def test_fusion_with_one_or_two_modalities(method, modalities):
    check_fusion(lambda fusion, *args: fusion.apply(*args), method, modalities)


@pytest.mark.parametrize("method", ZOO)
def test_zoo_methods_do_not_depend_on_dict_order(method):
    fusion, variables = initialised(method, ("image", "text", "audio"))
    embeddings, present = embeddings_and_presence(("image", "text", "audio"))
    reverse = {m: embeddings[m] for m in reversed(embeddings)}
    chex.assert_trees_all_close(
        fusion.apply(variables, reverse, present), fusion.apply(variables, embeddings, present)
    )


def test_tfn_output_is_the_full_outer_product():
    modalities = ("image", "text", "audio")
    embeddings, present = embeddings_and_presence(modalities)
    fusion = TensorFusion(dim=None)
    out = fusion.apply({}, embeddings, present)
    chex.assert_shape(out, (4, math.prod(WIDTHS[m] + 1 for m in modalities)))  # 4*5*6
    # Row 0 has everything: entry (i, j, k) is the product of the [x; 1] entries, the
    # modalities taken in sorted order (audio, image, text).
    aug = [np.append(np.asarray(embeddings[m][0]), 1.0) for m in sorted(modalities)]
    np.testing.assert_allclose(out[0], np.einsum("i,j,k->ijk", *aug).ravel(), rtol=1e-5, atol=1e-6)
    # Projected to 16: 17^3 features for three modalities.
    projected = TensorFusion(dim=16)
    shape = jax.eval_shape(
        lambda: projected.init_with_output(jax.random.key(0), embeddings, present)[0]
    )
    assert shape.shape == (4, 17**3)


def test_full_rank_lmf_equals_tfn_followed_by_dense():
    modalities = ("image", "text")
    embeddings, present = embeddings_and_presence(modalities)
    d0, d1 = WIDTHS["image"] + 1, WIDTHS["text"] + 1
    features = 3
    kernel = jax.random.normal(jax.random.key(2), (d0 * d1, features))
    bias = jax.random.normal(jax.random.key(3), (features,))
    tfn = TensorFusion(dim=None).apply({}, embeddings, present) @ kernel + bias
    # Rank d0 (= prod(d_m + 1) / max(d_m + 1)) is full rank for two modalities.
    lmf = LowRankFusion(rank=d0, features=features, dim=None)
    variables = jax.eval_shape(lmf.init, jax.random.key(0), embeddings, present)
    params = {
        "factor_image": jnp.broadcast_to(jnp.eye(d0)[:, :, None], (d0, d0, features)),
        "factor_text": kernel.reshape(d0, d1, features),
        "rank_weights": jnp.ones(d0),
        "bias": bias,
    }
    assert jax.tree.map(jnp.shape, variables["params"]) == jax.tree.map(jnp.shape, params)
    out = lmf.apply({"params": params}, embeddings, present)
    np.testing.assert_allclose(out, tfn, rtol=1e-4, atol=1e-4)


# --- the classifier with each fusion -------------------------------------------

SPEC = DataSpec(
    modalities=("image", "text", "audio"),
    num_classes=5,
    vocab_size=30,
    max_text_len=6,
    image_shape=(4, 4, 1),
    audio_shape=(256,),
)
AUDIO = {"frame_length": 64, "hop_length": 64}


def classifier_config(method: str, modalities=SPEC.modalities) -> ml_collections.ConfigDict:
    audio = AUDIO if method == "early_concat" else {**AUDIO, "channels": (4,)}
    return ml_collections.ConfigDict(
        {
            "name": "fusion_classifier",
            "modalities": modalities,
            "image_encoder": "mlp",
            "encoder_kwargs": {"image": {"hidden": (8,)}, "text": {"embed_dim": 4}, "audio": audio}
            if method != "early_concat"
            else {"text": {"embed_dim": 4}, "audio": audio},
            "features": 8,
            "hidden": (8,),
            "fusion": method,
            "fusion_kwargs": {"num_heads": 2} if method == "cross_attention" else {},
        }
    )


def make_batch(batch_size=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.random((batch_size, 4, 4, 1), np.float32),
        "text": rng.integers(2, 30, (batch_size, 6)).astype(np.int32),
        "text_mask": np.arange(6)[None] < rng.integers(1, 7, (batch_size, 1)),
        "audio": rng.normal(size=(batch_size, 256)).astype(np.float32),
        "label": rng.integers(0, 5, batch_size).astype(np.int32),
    }


@pytest.mark.parametrize("method", METHODS)
def test_classifier_with_each_fusion_ignores_an_absent_modality(method):
    model = build_model(classifier_config(method), SPEC)
    batch = make_batch()
    variables = model.init(jax.random.key(0), batch)
    absent = np.array([True, False, True])
    batch = {**batch, "present/audio": absent, "present/text": absent}
    garbage = {
        **batch,
        "audio": np.where(absent[:, None], batch["audio"], np.nan),
        "text": np.where(absent[:, None], batch["text"], 999),
        "text_mask": np.where(absent[:, None], batch["text_mask"], True),
    }
    apply = jax.jit(lambda b: model.apply(variables, b))
    out, out_garbage = apply(batch), apply(garbage)
    chex.assert_shape(out["logits"], (3, 5))
    chex.assert_tree_all_finite(out_garbage)
    chex.assert_trees_all_close(out, out_garbage, atol=1e-6)
    chex.assert_trees_all_close(out["logits"], model.apply(variables, batch)["logits"], atol=1e-5)


def test_tfn_classifier_head_sees_prod_of_augmented_widths():
    config = classifier_config("tfn", ("image", "text"))
    config.fusion_kwargs = {"dim": None}
    model = build_model(config, SPEC)
    variables = jax.eval_shape(model.init, jax.random.key(0), make_batch())
    assert variables["params"]["Dense_0"]["kernel"].shape == ((8 + 1) ** 2, 8)


@pytest.mark.parametrize(
    "method,kwargs,match",
    [
        (
            "attention",
            {},
            r"unknown fusion 'attention'; valid: concat, cross_attention, early_concat, "
            r"film, gated, lmf, sum, tfn",
        ),
        ("lmf", {"rnak": 2}, r"fusion 'lmf' has no field 'rnak' in fusion_kwargs; valid: dim"),
        ("lmf", {"rank": 0}, r"fusion 'lmf' has rank=0; valid: an int >= 1"),
        ("gated", {"gate": "relu"}, r"gate='relu'; valid: softmax, sigmoid"),
        ("film", {"conditioned": "video"}, r"conditioned='video'; valid: .*image, text, audio"),
        ("cross_attention", {"num_heads": 3}, r"features=8 not divisible by num_heads=3"),
        ("concat", {"x": 1}, r"fusion 'concat' has no field 'x' in fusion_kwargs; valid: none"),
    ],
)
def test_fusion_config_errors(method, kwargs, match):
    config = classifier_config(method)
    config.fusion = method
    config.fusion_kwargs = kwargs
    with pytest.raises(ConfigError, match=match) as info:
        build_model(config, SPEC)
    assert "\n" not in str(info.value)


# --- robustness evaluator -------------------------------------------------------

ROBUST_SPEC = DataSpec(("image", "text"), num_classes=10, vocab_size=12, max_text_len=5)


def hand_built_context(reader: str, workdir=None, num=40, batch_size=16):
    """Labels 0..9; the image is the one-hot label, text's first word is label + 2. The
    'model' reads only `reader`; padded rows carry a label no model predicts."""
    labels = np.arange(num) % 10
    batches = []
    for start in range(0, num, batch_size):
        idx = np.arange(start, start + batch_size)
        valid = idx < num
        label = np.where(valid, labels[idx % num], 99).astype(np.int32)
        image = np.eye(10, dtype=np.float32)[label % 10].reshape(-1, 1, 10, 1)
        text = np.full((batch_size, 5), 3, np.int32)
        text[:, 0] = label % 10 + 2
        batches.append(
            (
                {
                    "image": image,
                    "text": text,
                    "text_mask": np.ones((batch_size, 5), bool),
                    "label": label,
                },
                valid,
            )
        )

    def predict(batch):
        if reader == "image":
            logits = batch["image"].reshape(-1, 10) * batch["present/image"][:, None]
        else:
            logits = np.eye(10)[np.clip(batch["text"][:, 0] - 2, 0, 9)]
            logits = logits * batch["present/text"][:, None]
        return {"logits": logits}

    return EvalContext(
        config=None,
        spec=ROBUST_SPEC,
        params=None,
        step=7,
        workdir=workdir,
        writer=None,
        predict=predict,
        batches=lambda: iter(batches),
    )


def test_robustness_of_a_model_that_reads_only_the_image(tmp_path):
    evaluate = EVALUATORS.get("robustness")
    metrics = evaluate(hand_built_context("image", tmp_path))
    assert metrics["robustness/clean_accuracy"] == 1.0
    assert metrics["robustness/without_text"] == 1.0
    assert metrics["robustness/text_auc"] == pytest.approx(1.0)
    # Without the image the logits are all 0 and argmax says 0: right for the 4 zeros.
    assert metrics["robustness/without_image"] == pytest.approx(0.1)
    assert metrics["robustness/image_noise_4"] < metrics["robustness/image_noise_0.25"] <= 1.0
    assert metrics["robustness/image_auc"] < 1.0
    # Deterministic noise; files only when there is a workdir.
    assert evaluate(hand_built_context("image")) == metrics
    report = json.loads((tmp_path / "robustness.json").read_text())
    assert report["scales"] == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    assert report["noise_accuracy"]["image"][-1] == metrics["robustness/image_noise_4"]
    assert (tmp_path / "images" / "robustness.png").stat().st_size > 0


def test_robustness_text_noise_replaces_words():
    metrics = EVALUATORS.get("robustness")(hand_built_context("text"), scales=(0, 1, 2))
    assert metrics["robustness/image_auc"] == pytest.approx(1.0)
    # At the top scale every word is random: near chance (1 in 10).
    assert metrics["robustness/text_noise_2"] < 0.4
    assert metrics["robustness/text_noise_0"] > metrics["robustness/text_noise_1"]


def test_normalised_auc():
    assert normalised_auc([0, 1, 2], [0.8, 0.8, 0.8], 0.8) == pytest.approx(1.0)
    assert normalised_auc([0, 2], [1.0, 0.0], 1.0) == pytest.approx(0.5)
    assert math.isnan(normalised_auc([0, 1], [0.0, 0.0], 0.0))


# --- comparison ------------------------------------------------------------------


def test_compare_methods_are_the_fusion_registry():
    assert compare.methods() == FUSIONS.names()
    assert compare.config_spec("film", "tiny") == "configs/digits_fusion.py:film_tiny"
    assert compare.method_config("early_concat").model.fusion == "early_concat"
    with pytest.raises(ConfigError, match=r"unknown fusion method 'nope'; valid: concat, ") as e:
        compare.method_config("nope")
    assert "\n" not in str(e.value)


def test_compare_writes_table_and_plot_and_skips_finished_runs(tmp_path, monkeypatch):
    configs = {m: compare.method_config(m, "tiny") for m in ("concat", "sum")}
    for config in configs.values():
        # Fewer compilations and passes: this test checks the plumbing, not the numbers.
        config.num_devices = 1  # compiling for 8 fake devices doubles this test's time
        config.eval_batch_size = 128  # the whole tiny test split in one batch
        config.evaluators = (("robustness", {"scales": (0, 4)}),)
    results = compare.compare(configs, tmp_path, steps=2, timing_steps=2, command="test")
    readme = (tmp_path / "README.md").read_text()
    assert "| `concat` |" in readme and "| `sum` |" in readme
    assert "AUC image" in readme and "acc w/o audio" in readme
    assert (tmp_path / "robustness.png").stat().st_size > 0
    assert all(r.num_params > 0 and r.step_ms > 0 for r in results)
    assert 0 <= results[0].metrics["accuracy"] <= 1
    assert "robustness/text_auc" in results[1].metrics

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished method was retrained")

    monkeypatch.setattr("crossjax.train.train_and_evaluate", must_not_train)
    again = compare.compare(configs, tmp_path, steps=2, timing_steps=2, command="test")
    assert [r.metrics for r in again] == [r.metrics for r in results]
