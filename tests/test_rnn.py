"""RNN family: masked LSTM/GRU text encoders, the conditioned decoder, greedy and beam
decoding, the token cross-entropy, and tiny end-to-end captioner / seq-AE runs."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import jit_apply

from configs import digits_text_seq_ae, shapes_captioner
from crossjax import train as train_lib
from crossjax.data.spec import DataSpec
from crossjax.data.text import Vocabulary
from crossjax.errors import ConfigError
from crossjax.evaluators import EVALUATORS, EvalContext, evaluator_requirements, parse_evaluators
from crossjax.losses import LOSSES, LossContext, build_loss
from crossjax.models import build_model
from crossjax.models.decoding import beam_search, greedy_decode
from crossjax.models.transformer import TEXT_ENCODERS
from crossjax.requirements import check_requirements

CTX = LossContext(step=jnp.int32(0), rng=jax.random.key(0))
SPEC = DataSpec(modalities=("image", "text"), vocab_size=12, max_text_len=7, image_shape=(8, 8, 3))


def captioner_config(**overrides) -> ml_collections.ConfigDict:
    fields = {
        "name": "captioner",
        "encoder_kwargs": {"channels": (4,)},
        "features": 8,
        "embed_dim": 6,
        "hidden": 10,
    }
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def toy_batch(b: int = 3) -> dict:
    k1, k2 = jax.random.split(jax.random.key(1))
    lengths = jnp.array([2, 7, 4, 0, 5][:b])
    mask = jnp.arange(SPEC.max_text_len)[None, :] < lengths[:, None]
    text = jax.random.randint(k2, (b, SPEC.max_text_len), 2, SPEC.vocab_size)
    return {
        "image": jax.random.uniform(k1, (b, *SPEC.image_shape)),
        "text": jnp.where(mask, text, 0),
        "text_mask": mask,
    }


def init(model, batch):
    return jax.jit(model.init)(jax.random.key(0), batch)


# --- encoders ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_text_encoders_ignore_padded_positions(cell, bidirectional):
    encoder = TEXT_ENCODERS.get(cell)(
        vocab_size=12, embed_dim=5, hidden=6, features=4, bidirectional=bidirectional
    )
    batch = toy_batch(4)
    text, mask = batch["text"], batch["text_mask"]
    variables = jax.jit(encoder.init)(jax.random.key(0), text, mask)
    apply = jit_apply(encoder)
    out = apply(variables, text, mask)
    assert out.shape == (4, 4)
    garbage = jnp.where(mask, text, 11)  # other ids at every padded position
    np.testing.assert_allclose(apply(variables, garbage, mask), out, atol=1e-6)
    # A real word does change the encoding, and the empty row encodes the zero state.
    changed = text.at[:, 0].set(jnp.where(text[:, 0] == 3, 4, 3))
    assert not np.allclose(apply(variables, changed, mask)[:3], out[:3])
    np.testing.assert_allclose(out[3], 0.0)


def test_two_tower_accepts_an_lstm_text_tower():
    config = ml_collections.ConfigDict(
        {
            "name": "two_tower",
            "image_encoder": "mlp",
            "text_encoder": "lstm",
            "embed_dim": 6,
            "encoder_kwargs": {"image": {"hidden": (8,)}, "text": {"hidden": 8}},
        }  # fmt: skip
    )
    model = build_model(config, SPEC)
    batch = toy_batch()
    assert jit_apply(model)(init(model, batch), batch)["emb/text"].shape == (3, 6)


# --- models and decoding ------------------------------------------------------------------


@pytest.mark.parametrize("cell, attention", [("lstm", False), ("gru", False), ("lstm", True)])
def test_captioner_outputs_and_teacher_forcing_is_causal(cell, attention):
    model = build_model(captioner_config(cell=cell, attention=attention), SPEC)
    batch = toy_batch()
    variables = init(model, batch)
    out = jit_apply(model)(variables, batch)
    assert out["token_logits"].shape == (3, 7, 12) and out["emb/image"].shape == (3, 8)
    # Changing word t changes only the predictions of positions > t.
    changed = dict(batch, text=batch["text"].at[:, 3].set(5))
    other = jit_apply(model)(variables, changed)["token_logits"]
    np.testing.assert_allclose(other[:, :4], out["token_logits"][:, :4], atol=1e-6)


def _toy_step(table: np.ndarray):
    """A decoder whose next-word log-probs depend only on the previous word: row V is the
    start row. State: a dummy (B,) array."""
    log_table = jnp.log(jnp.asarray(table, jnp.float32))
    start = table.shape[0] - 1

    def step_fn(state, prev, t):
        return state, log_table[jnp.where(t == 0, start, prev)]

    return step_fn


def test_beam_search_beats_a_myopic_greedy_decoder():
    # Words 0 (END), 1, 2, 3. Start: 1 (0.55) or 2 (0.45). After 1 the mass is spread
    # (best: 3, 0.3); after 2 or 3 the caption ends (0.97). Greedy takes 1, 3, END:
    # 0.55 * 0.3 * 0.97; beam 2 finds 2, END: 0.45 * 0.97.
    table = np.array([
        [0.97, 0.01, 0.01, 0.01],  # after END (never used)
        [0.25, 0.25, 0.20, 0.30],  # after 1
        [0.97, 0.01, 0.01, 0.01],  # after 2
        [0.97, 0.01, 0.01, 0.01],  # after 3
        [0.00, 0.55, 0.45, 0.00],  # start
    ])  # fmt: skip
    step_fn, state = _toy_step(table), jnp.zeros((2,))
    greedy_ids, greedy_score = greedy_decode(step_fn, state, max_len=5, alpha=0.6)
    beam_ids, beam_score = beam_search(step_fn, state, beam_size=2, max_len=5, alpha=0.6)
    np.testing.assert_array_equal(greedy_ids[0], [1, 3, 0, 0, 0])
    np.testing.assert_array_equal(beam_ids[0], [2, 0, 0, 0, 0])
    np.testing.assert_allclose(greedy_score, np.log(0.55 * 0.3 * 0.97) / 3**0.6, rtol=1e-5)
    np.testing.assert_allclose(beam_score, np.log(0.45 * 0.97) / 2**0.6, rtol=1e-5)


def test_beam_width_one_is_greedy_and_scores_match_rescoring():
    model = build_model(captioner_config(), SPEC)
    batch = toy_batch(5)
    variables = init(model, batch)
    step_fn, state = model.apply(variables, batch, method=lambda m, b: m.decoding(b))
    greedy_ids, greedy_score = greedy_decode(step_fn, state, max_len=7)
    beam_ids, beam_score = beam_search(step_fn, state, beam_size=1, max_len=7)
    np.testing.assert_array_equal(beam_ids, greedy_ids)
    np.testing.assert_allclose(beam_score, greedy_score, rtol=1e-6)
    ids, score = beam_search(step_fn, state, beam_size=4, max_len=7)
    rescored = jit_apply(model)(variables, batch, ids, method="score")
    np.testing.assert_allclose(rescored, score, rtol=1e-4, atol=1e-5)
    assert np.all(score >= greedy_score - 1e-5)  # holds here; not a guarantee in general
    np.testing.assert_array_equal(jit_apply(model)(variables, batch, method="generate"), greedy_ids)


def test_random_tables_beam_one_equals_greedy_and_ends_with_padding():
    rng = np.random.default_rng(0)
    for _ in range(3):
        table = rng.dirichlet(np.ones(6) * 0.3, size=7)
        step_fn, state = _toy_step(table), jnp.zeros((3,))
        g_ids, g_score = greedy_decode(step_fn, state, max_len=8)
        b_ids, b_score = beam_search(step_fn, state, beam_size=1, max_len=8)
        np.testing.assert_array_equal(b_ids, g_ids)
        np.testing.assert_allclose(b_score, g_score, rtol=1e-6)
        ids = np.asarray(beam_search(step_fn, state, beam_size=3, max_len=8)[0])
        ended = np.cumsum(ids == 0, axis=1) > 0
        assert np.all(ids[ended] == 0)


@pytest.mark.parametrize("attention", [False, True])
def test_generate_jitted_equals_eager_and_has_fixed_shapes(attention):
    model = build_model(captioner_config(attention=attention), SPEC)
    batch = toy_batch()
    variables = init(model, batch)
    eager = model.apply(variables, batch, method="generate", beam_size=3)
    jitted = jax.jit(lambda v, b: model.apply(v, b, method="generate", beam_size=3))(
        variables, batch
    )
    assert eager.shape == (3, 7) and eager.dtype == jnp.int32
    np.testing.assert_array_equal(jitted, eager)


def test_seq_autoencoder_outputs():
    spec = DataSpec(modalities=("text",), vocab_size=12, max_text_len=7)
    config = ml_collections.ConfigDict(
        {
            "name": "seq_autoencoder",
            "encoder": "gru",
            "latent_dim": 5,
            "hidden": 8,
            "embed_dim": 4,
            "encoder_kwargs": {"hidden": 6, "bidirectional": True},
        }  # fmt: skip
    )
    model = build_model(config, spec)
    batch = {k: v for k, v in toy_batch().items() if k != "image"}
    variables = init(model, batch)
    out = jit_apply(model)(variables, batch)
    assert out["token_logits"].shape == (3, 7, 12) and out["z"].shape == (3, 5)
    assert jit_apply(model)(variables, batch, method="generate", beam_size=2).shape == (3, 7)


@pytest.mark.parametrize(
    "config, spec, match",
    [
        (captioner_config(depth=2), SPEC, "has no field 'depth'"),
        (captioner_config(cell="rnn"), SPEC, "cell='rnn'"),
        (captioner_config(encoder_kwargs={"width": 3}), SPEC, "no field 'width'"),
        (captioner_config(attention=True, image_encoder="mlp"), SPEC, "image_encoder='cnn'"),
        (captioner_config(attention=1), SPEC, "attention=1"),
        (captioner_config(), DataSpec(modalities=("text",), vocab_size=5, max_text_len=4),
         "modality 'image'"),
        (ml_collections.ConfigDict({"name": "seq_autoencoder", "encoder": "rnn"}), SPEC,
         "unknown text encoder 'rnn'"),
    ],
)  # fmt: skip
def test_bad_fields_are_one_line_config_errors(config, spec, match):
    with pytest.raises(ConfigError, match=match):
        build_model(config, spec)


@pytest.mark.parametrize("beam_size", [0, 2.5, True])
def test_bad_beam_size_is_a_config_error(beam_size):
    model = build_model(captioner_config(), SPEC)
    batch = toy_batch()
    with pytest.raises(ConfigError, match="beam_size"):
        model.apply(init(model, batch), batch, method="generate", beam_size=beam_size)


# --- loss -------------------------------------------------------------------------------


def test_token_cross_entropy_counts_words_and_the_end():
    # Vocabulary of 3; text [2, 1, 0, 0]: targets are 2, 1 and END (0) at position 2;
    # position 3 is ignored. Uniform logits except position 0, which puts 2 on word 2.
    logits = jnp.zeros((1, 4, 3)).at[0, 0, 2].set(2.0).at[0, 3, 1].set(50.0)
    batch = {
        "text": jnp.array([[2, 1, 0, 0]]),
        "text_mask": jnp.array([[True, True, False, False]]),
    }
    loss, metrics = LOSSES.get("token_cross_entropy")({"token_logits": logits}, batch, CTX)
    nll_0 = -(2.0 - np.log(np.exp(2.0) + 2))
    expected = (nll_0 + 2 * np.log(3)) / 3
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)
    np.testing.assert_allclose(metrics["token_nll"], [expected], rtol=1e-6)
    # Position 0 right (argmax 2); positions 1, 2 uniform: argmax 0 (first), right at END.
    np.testing.assert_allclose(metrics["token_accuracy"], [2 / 3], rtol=1e-6)


def test_token_cross_entropy_is_the_mean_of_batches_of_one():
    batch = toy_batch(4)
    logits = jax.random.normal(jax.random.key(3), (4, 7, 12))
    loss_fn = build_loss([("token_cross_entropy", 1.0)])
    full, _ = loss_fn({"token_logits": logits}, batch, CTX)
    ones = [loss_fn({"token_logits": logits[i : i + 1]},
                    {k: v[i : i + 1] for k, v in batch.items()}, CTX)[0] for i in range(4)]  # fmt: skip
    np.testing.assert_allclose(full, np.mean(ones), rtol=1e-6)
    with pytest.raises(ConfigError, match="needs model output 'token_logits'"):
        loss_fn({"logits": logits}, batch, CTX)


# --- end to end ---------------------------------------------------------------------------


def test_tiny_captioner_trains_and_reports_caption_metrics(tmp_path):
    metrics = train_lib.train_and_evaluate(shapes_captioner.get_config("tiny"), str(tmp_path))[
        "test"
    ]
    for key in ("token_nll", "token_accuracy", "captioning/bleu4_greedy", "captioning/bleu4_beam",
                "captioning/cider_greedy", "captioning/cider_beam", "caption_attribute_accuracy",
                "caption_attribute_accuracy_greedy"):  # fmt: skip
        assert np.isfinite(metrics[key]), key
    lines = (tmp_path / "images" / "captioning.txt").read_text().splitlines()
    assert len(lines) == 4 and "greedy:" in lines[0] and "reference:" in lines[0]
    assert (tmp_path / "images" / "captioning.png").exists()
    with open(tmp_path / "metrics.jsonl") as f:
        train = [json.loads(line) for line in f if '"train"' in line]
    assert train[-1]["loss"] < train[0]["loss"]


def test_tiny_seq_autoencoder_trains(tmp_path):
    metrics = train_lib.train_and_evaluate(digits_text_seq_ae.get_config("tiny"), str(tmp_path))[
        "test"
    ]
    assert np.isfinite(metrics["token_accuracy"])
    assert 0.0 <= metrics["reconstruction/exact_match_beam"] <= 1.0
    assert (tmp_path / "images" / "reconstruction.txt").exists()


def test_captioning_evaluator_rejects_a_missing_attribute_feature():
    model = build_model(captioner_config(), SPEC)
    ctx = EvalContext(
        config=None, spec=SPEC, params=None, step=0, workdir=None, writer=None,
        predict=None, batches=lambda: iter([(toy_batch(), np.ones(3, bool))]), model=model,
        vocab=Vocabulary([f"w{i}" for i in range(10)]),
    )  # fmt: skip
    parsed = parse_evaluators([("captioning", {"attribute_accuracy": True})])
    with pytest.raises(ConfigError, match="evaluator 'captioning' needs batch keys 'attr/num_obj"):
        check_requirements(evaluator_requirements(parsed), toy_batch().keys(), ())
    with pytest.raises(ConfigError, match="beam_size"):
        EVALUATORS.get("captioning")(ctx, beam_size=0)
