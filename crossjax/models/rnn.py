"""Recurrent text models: LSTM/GRU text encoders, a conditioned RNN decoder, and two
models built from them that decode greedily or by beam search (`crossjax.models.decoding`).

- Text encoders "lstm" and "gru" (registered in `TEXT_ENCODERS`, so `two_tower` can use
  them): text (B, L) int32, text_mask (B, L) bool -> (B, features).
- `RNNDecoder`: word embeddings + LSTM/GRU cell + vocabulary projection, conditioned on a
  vector (B, C) through its initial state (and, optionally, that vector concatenated to
  every input). Teacher forcing: the input at position 0 is a learned start embedding and
  at position t > 0 the word t - 1, so `token_logits[:, t]` predicts `text[:, t]`. There
  is no end token: the end of a caption is predicted as the padding id 0.
- Model "captioner" (Show and Tell): image encoder -> decoder. Outputs `token_logits`
  (B, L, V) and `emb/image` (B, features). With `attention=True` (Show, Attend and
  Tell) the decoder attends over the cells of a conv map (`GridCNNImageEncoder`) at
  every step through an `AttentionCell`.
- Model "seq_autoencoder": text -> RNN (or any `TEXT_ENCODERS`) encoder -> `z`
  (B, latent_dim) -> decoder reconstructs the text. Outputs `token_logits` and `z`.

Both models have `generate(batch, *, beam_size=1, alpha=DEFAULT_ALPHA)` -> ids (B, L)
int32 (greedy for beam_size 1, else beam search; 0 from the end on) and
`score(batch, ids, *, alpha)` -> (B,) length-normalised log-probabilities, used as
`model.apply(variables, batch, method="generate", beam_size=4)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models.decoding import (
    DEFAULT_ALPHA,
    END_ID,
    State,
    StepFn,
    beam_search,
    check_alpha,
    check_beam_size,
    greedy_decode,
    normalise,
)
from crossjax.models.encoders import GridCNNImageEncoder
from crossjax.models.factory import (
    MODELS,
    boolean,
    parse_dtype,
    positive_int,
    read_fields,
    require_modalities,
)
from crossjax.models.modality_encoders import build_encoder, encoder_inputs
from crossjax.models.recurrent import (  # noqa: F401 - re-exported
    CELLS,
    GRUTextEncoder,
    LSTMTextEncoder,
    RNNTextEncoder,
    hidden_of,
    make_cell,
)


class AttentionCell(nn.Module):
    """An LSTM/GRU cell that first reads a context from a memory by dot-product attention
    with its previous output h (Show, Attend and Tell's soft attention).

    carry {"rnn": the cell's carry, "memory": (B, N, F), "keys": (B, N, A)}, x (B, E) ->
    carry, [h, context] (B, hidden + F). The context is also an input of the cell.
    """

    cell: str
    hidden: int
    attention_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry: dict[str, Any], x: jax.Array) -> tuple[dict[str, Any], jax.Array]:
        query = nn.Dense(self.attention_dim, dtype=self.dtype, name="query")(
            hidden_of(carry["rnn"])
        )
        scores = jnp.einsum("bna,ba->bn", carry["keys"], query) / math.sqrt(self.attention_dim)
        weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        context = jnp.einsum("bn,bnf->bf", weights, carry["memory"])
        cell = make_cell(self.cell, self.hidden, self.dtype, name="cell")
        rnn, out = cell(carry["rnn"], jnp.concatenate([x, context], axis=-1))
        return {**carry, "rnn": rnn}, jnp.concatenate([out, context], axis=-1)


class RNNDecoder(nn.Module):
    """Word decoder conditioned on a vector cond (B, C), or with `attention` on a memory
    cond (B, N, C) that every step attends over (its mean is then the vector).

    The initial state is tanh(Dense(vector)) (both c and h for an LSTM); with
    `condition_inputs` the vector is also concatenated to the word embedding at every
    step. `__call__(cond, text)` (teacher forcing) -> logits (B, L, V) float32; `step`
    advances one position for decoding.
    """

    vocab_size: int
    embed_dim: int = 64
    hidden: int = 256
    cell: str = "lstm"
    condition_inputs: bool = True
    attention: bool = False
    attention_dim: int = 64
    dtype: Any = jnp.float32

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
        self.start = self.param(
            "start_embedding", nn.initializers.normal(stddev=1.0), (self.embed_dim,)
        )
        if self.attention:
            self.rnn_cell = AttentionCell(self.cell, self.hidden, self.attention_dim, self.dtype)
            self.keys = nn.Dense(self.attention_dim, dtype=self.dtype)
        else:
            self.rnn_cell = make_cell(self.cell, self.hidden, self.dtype)
        self.init_h = nn.Dense(self.hidden, dtype=self.dtype)
        if self.cell == "lstm":
            self.init_c = nn.Dense(self.hidden, dtype=self.dtype)
        self.project = nn.Dense(self.vocab_size, dtype=self.dtype)

    def initial_state(self, cond: jax.Array) -> dict[str, Any]:
        """Decoder state {"carry": the cell's carry, "cond": vector (B, C)} from cond
        (B, C), or (B, N, C) with attention (the carry then holds the memory)."""
        chex.assert_rank(cond, 3 if self.attention else 2)
        cond = cond.astype(self.dtype)
        vector = jnp.mean(cond, axis=1) if self.attention else cond
        h = jnp.tanh(self.init_h(vector))
        carry = (jnp.tanh(self.init_c(vector)), h) if self.cell == "lstm" else h
        if self.attention:
            carry = {"rnn": carry, "memory": cond, "keys": self.keys(cond)}
        return {"carry": carry, "cond": vector}

    def _inputs(self, embedded: jax.Array, vector: jax.Array) -> jax.Array:
        """The cell input: embedding (..., E) [+ vector (B, C) broadcast over positions]."""
        if not self.condition_inputs:
            return embedded
        vector = jnp.broadcast_to(
            vector.reshape(vector.shape[:1] + (1,) * (embedded.ndim - 2) + vector.shape[1:]),
            embedded.shape[:-1] + vector.shape[1:],
        )
        return jnp.concatenate([embedded, vector], axis=-1)

    def __call__(self, cond: jax.Array, text: jax.Array) -> jax.Array:
        """Teacher forcing: cond (B, C) or (B, N, C), text (B, L) -> logits (B, L, V) float32."""
        chex.assert_rank(text, 2)
        state = self.initial_state(cond)
        start = jnp.broadcast_to(self.start.astype(self.dtype), (text.shape[0], 1, self.embed_dim))
        embedded = jnp.concatenate([start, self.embed(text[:, :-1])], axis=1)
        scan = nn.scan(
            lambda cell, carry, x: cell(carry, x),
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
        )
        _, outputs = scan(self.rnn_cell, state["carry"], self._inputs(embedded, state["cond"]))
        return self.project(outputs).astype(jnp.float32)

    def step(
        self, state: dict[str, Any], prev_ids: jax.Array, t: jax.Array
    ) -> tuple[dict[str, Any], jax.Array]:
        """One position: state, the previous word ids (N,) (ignored at t = 0, where the
        start embedding is the input) -> new state, log-probabilities (N, V) float32."""
        embedded = jnp.where(t == 0, self.start.astype(self.dtype), self.embed(prev_ids))
        carry, out = self.rnn_cell(state["carry"], self._inputs(embedded, state["cond"]))
        log_probs = jax.nn.log_softmax(self.project(out).astype(jnp.float32), axis=-1)
        return {"carry": carry, "cond": state["cond"]}, log_probs


# --- models ----------------------------------------------------------------------------


class ConditionedTextGenerator(nn.Module):
    """Shared by the captioner and the sequence autoencoder: `condition(batch)` runs the
    `encoder` to give what the `decoder` is conditioned on; subclasses define it.
    `max_len` is the length L of generated ids."""

    encoder: nn.Module
    decoder: RNNDecoder
    max_len: int

    def condition(
        self, batch: Mapping[str, jax.Array], train: bool
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(cond (B, C), or a grid (B, N, C) for an attending decoder; outputs to report
        besides `token_logits`)."""
        raise NotImplementedError

    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        cond, outputs = self.condition(batch, train)
        text = batch["text"]
        text = jnp.where(batch["text_mask"].astype(bool), text, 0) if "text_mask" in batch else text
        outputs["token_logits"] = self.decoder(cond, text)
        return outputs

    def decoding(self, batch: Mapping[str, jax.Array]) -> tuple[StepFn, State]:
        """(step_fn, state) for `greedy_decode` / `beam_search`: a pure step function with
        the decoder's parameters bound (usable outside `apply`) and the initial state."""
        cond, _ = self.condition(batch, False)
        state = self.decoder.initial_state(cond)
        decoder = self.decoder.clone(parent=None)
        variables = {"params": self.decoder.variables["params"]}

        def step_fn(state, prev, t):
            return decoder.apply(variables, state, prev, t, method="step")

        return step_fn, state

    def generate(
        self, batch: Mapping[str, jax.Array], *, beam_size: int = 1, alpha: float = DEFAULT_ALPHA
    ) -> jax.Array:
        """Ids (B, max_len) int32 decoded from the batch's conditioning: greedy for
        beam_size 1, else beam search; 0 (padding) from the end of each caption on."""
        step_fn, state = self.decoding(batch)
        if check_beam_size(beam_size) == 1:
            ids, _ = greedy_decode(step_fn, state, max_len=self.max_len, alpha=check_alpha(alpha))
        else:
            ids, _ = beam_search(
                step_fn, state, beam_size=beam_size, max_len=self.max_len, alpha=check_alpha(alpha)
            )
        return ids

    def score(
        self, batch: Mapping[str, jax.Array], ids: jax.Array, *, alpha: float = DEFAULT_ALPHA
    ) -> jax.Array:
        """Normalised log-probability (B,) of ids (B, L) (ended by the first 0, which
        counts as a token unless the row has no 0), as the decoders rank them."""
        cond, _ = self.condition(batch, False)
        log_probs = jax.nn.log_softmax(self.decoder(cond, ids), axis=-1)
        is_end = ids == END_ID
        counted = jnp.cumsum(is_end, axis=1) - is_end == 0  # up to and including the end
        chosen = jnp.take_along_axis(log_probs, ids[..., None], axis=-1)[..., 0]
        return normalise(
            jnp.sum(jnp.where(counted, chosen, 0.0), axis=1), jnp.sum(counted, axis=1), alpha
        )


class Captioner(ConditionedTextGenerator):
    """Show and Tell: image (B, H, W, C) -> image encoder -> `emb/image` (B, F) -> decoder.
    With a grid encoder (B, N, F) and an attention decoder it is Show, Attend and Tell;
    `emb/image` is then the grid's mean."""

    def condition(self, batch, train):
        emb = self.encoder(batch["image"], train=train)  # (B, F), or a grid (B, N, F)
        vector = jnp.mean(emb, axis=1) if emb.ndim == 3 else emb
        return emb, {"emb/image": vector.astype(jnp.float32)}


class SequenceAutoencoder(ConditionedTextGenerator):
    """text (B, L) + text_mask -> text encoder -> z (B, latent_dim) -> decoder."""

    def condition(self, batch, train):
        z = self.encoder(*encoder_inputs("text", batch), train=train)
        chex.assert_rank(z, 2)
        return z, {"z": z.astype(jnp.float32)}


# --- factories -------------------------------------------------------------------------

_DECODER_DEFAULTS = {
    "embed_dim": 64,
    "hidden": 256,
    "cell": "lstm",  # "lstm" | "gru"
    "condition_inputs": True,  # also feed the conditioning vector at every step
    "dtype": "float32",
}
_CAPTIONER_DEFAULTS = {
    "image_encoder": "cnn",  # any IMAGE_ENCODERS name: "cnn" | "mlp" | "vit" | "module:Class"
    "encoder_kwargs": {},  # fields of the image encoder, e.g. {"channels": (32, 64)}
    "features": 128,  # width of emb/image, the conditioning vector
    # True: Show, Attend and Tell: the decoder attends over the cells of the "cnn" conv
    # map (`GridCNNImageEncoder`) at every step.
    "attention": False,
    "attention_dim": 64,
    **_DECODER_DEFAULTS,
}
_SEQ_AE_DEFAULTS = {
    "encoder": "lstm",  # any TEXT_ENCODERS name: "lstm" | "gru" | "bow" | "transformer"
    "encoder_kwargs": {},  # fields of the text encoder, e.g. {"hidden": 128}
    "latent_dim": 32,
    **_DECODER_DEFAULTS,
}


def _decoder(
    fields: dict[str, Any], spec: DataSpec, dtype: Any, model: str, attention_dim: int = 0
) -> RNNDecoder:
    """The decoder from the `_DECODER_DEFAULTS` fields; attending if `attention_dim` > 0."""
    if fields["cell"] not in CELLS:
        raise ConfigError(f"model {model!r} has cell={fields['cell']!r}; valid: {', '.join(CELLS)}")
    return RNNDecoder(
        vocab_size=spec.vocab_size,
        embed_dim=positive_int(fields["embed_dim"], "embed_dim", model),
        hidden=positive_int(fields["hidden"], "hidden", model),
        cell=fields["cell"],
        condition_inputs=boolean(fields["condition_inputs"], "condition_inputs", model),
        attention=attention_dim > 0,
        attention_dim=attention_dim or RNNDecoder.attention_dim,
        dtype=dtype,
    )


def _check_text_spec(spec: DataSpec, model: str) -> None:
    if spec.vocab_size is None or spec.max_text_len is None:
        raise ConfigError(f"model {model!r} generates text but the DataSpec has no vocabulary")


@MODELS.register("captioner")
def captioner(config: Any, spec: DataSpec) -> Captioner:
    """Builds a `Captioner` from the `model` config section (fields in `_CAPTIONER_DEFAULTS`)."""
    model = "captioner"
    fields = read_fields(config, _CAPTIONER_DEFAULTS, model)
    require_modalities(model, ("image", "text"), spec)
    _check_text_spec(spec, model)
    dtype = parse_dtype(fields["dtype"], model)
    encoder, attention_dim = fields["image_encoder"], 0
    if boolean(fields["attention"], "attention", model):
        if fields["image_encoder"] != "cnn":
            raise ConfigError(
                f"model {model!r}: attention=True attends over the conv map of "
                f"image_encoder='cnn', not {fields['image_encoder']!r}"
            )
        encoder = GridCNNImageEncoder
        attention_dim = positive_int(fields["attention_dim"], "attention_dim", model)
    return Captioner(
        decoder=_decoder(fields, spec, dtype, model, attention_dim),
        max_len=spec.max_text_len,
        encoder=build_encoder(
            "image",
            spec,
            encoder=encoder,
            kwargs=fields["encoder_kwargs"],
            features=positive_int(fields["features"], "features", model),
            dtype=dtype,
            model=model,
            kwargs_field="encoder_kwargs",
        ),
    )


@MODELS.register("seq_autoencoder")
def seq_autoencoder(config: Any, spec: DataSpec) -> SequenceAutoencoder:
    """Builds a `SequenceAutoencoder` from the `model` section (fields in `_SEQ_AE_DEFAULTS`)."""
    model = "seq_autoencoder"
    fields = read_fields(config, _SEQ_AE_DEFAULTS, model)
    require_modalities(model, ("text",), spec)
    _check_text_spec(spec, model)
    dtype = parse_dtype(fields["dtype"], model)
    return SequenceAutoencoder(
        decoder=_decoder(fields, spec, dtype, model),
        max_len=spec.max_text_len,
        encoder=build_encoder(
            "text",
            spec,
            encoder=fields["encoder"],
            kwargs=fields["encoder_kwargs"],
            features=positive_int(fields["latent_dim"], "latent_dim", model),
            dtype=dtype,
            model=model,
            field="encoder",
            kwargs_field="encoder_kwargs",
        ),
    )
