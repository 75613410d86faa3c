"""Two-tower (dual encoder) model for contrastive image-text learning (CLIP, SigLIP).

An image tower (any `IMAGE_ENCODERS` entry: "mlp", "cnn", "vit") and a text tower (any
`TEXT_ENCODERS` entry: "bow", "transformer", "lstm", "gru") map their modality into one shared space of
`embed_dim`; the embeddings are L2-normalised in float32. The model also owns the learned
logit scale t (stored as log t, used as min(exp(log t), 100)) and bias b of the losses in
`crossjax.losses.contrastive`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models.factory import MODELS, parse_dtype, positive_int, read_fields
from crossjax.models.modality_encoders import build_encoders, masked_text, parse_encoder_kwargs

MAX_LOGIT_SCALE = 100.0  # as in CLIP: keeps the softmax from collapsing onto one pair


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows of x (B, D) scaled to unit norm, in float32 (a zero row stays zero)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


class TwoTower(nn.Module):
    """Image and text towers with a shared embedding space.

    `__call__(batch)` reads `image` (B, H, W, C), `text` (B, L) and `text_mask` (B, L) and
    returns `emb/image`, `emb/text` (B, D) float32 unit vectors and the scalars
    `logit_scale` (t = min(exp(param), 100)) and `logit_bias`. `encode_image` and
    `encode_text` run one tower alone, e.g. for zero-shot prompts:
    `model.apply(variables, text, mask, method="encode_text")`.
    """

    image_encoder: nn.Module
    text_encoder: nn.Module
    init_temperature: float = math.log(1 / 0.07)
    init_bias: float = -10.0
    dtype: Any = jnp.float32

    def setup(self):
        # Both scalars live in every model so that one checkpoint serves CLIP and SigLIP;
        # the CLIP loss simply never reads the bias.
        self.log_scale = self.param(
            "logit_scale", nn.initializers.constant(self.init_temperature), (), jnp.float32
        )
        self.bias = self.param(
            "logit_bias", nn.initializers.constant(self.init_bias), (), jnp.float32
        )

    def encode_image(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        """image (B, H, W, C) -> (B, D) float32 unit vectors."""
        emb = self.image_encoder(image.astype(self.dtype), train=train)
        chex.assert_rank(emb, 2)
        return l2_normalize(emb)

    def encode_text(
        self, text: jax.Array, text_mask: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        """text (B, L) int32 and text_mask (B, L) bool (default: text != 0) -> (B, D)."""
        emb = self.text_encoder(*masked_text(text, text_mask), train=train)
        chex.assert_rank(emb, 2)
        return l2_normalize(emb)

    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        """Both embeddings; a batch without `text` (labelled images for zero-shot
        evaluation) gives `emb/image` alone."""
        outputs = {
            "emb/image": self.encode_image(batch["image"], train=train),
            "logit_scale": jnp.minimum(jnp.exp(self.log_scale), MAX_LOGIT_SCALE),
            "logit_bias": self.bias,
        }
        if "text" in batch:
            text = self.encode_text(batch["text"], batch.get("text_mask"), train=train)
            chex.assert_equal_shape([outputs["emb/image"], text])
            outputs["emb/text"] = text
        elif self.is_initializing():  # the text tower still embeds zero-shot prompts
            self.encode_text(jnp.ones((batch["image"].shape[0], 1), jnp.int32))
        return outputs


_DEFAULTS = {
    "image_encoder": "vit",  # "mlp" | "cnn" | "vit" | "package.module:Class"
    "text_encoder": "transformer",  # "bow" | "transformer" | "package.module:Class"
    "encoder_kwargs": {},  # per tower: {"image": {"depth": 2}, "text": {"width": 64}}
    "embed_dim": 128,
    "init_temperature": math.log(1 / 0.07),  # log t; SigLIP: log(10)
    "init_bias": -10.0,  # b, used by SigLIP only
    "dtype": "float32",
}
_TOWERS = ("image", "text")


def _real(value: Any, field: str, model: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"model {model!r} has {field}={value!r}; valid: a finite number")
    return float(value)


@MODELS.register("two_tower")
def two_tower(config: Any, spec: DataSpec) -> TwoTower:
    """Builds a `TwoTower` from the `model` config section (fields in `_DEFAULTS`)."""
    model = "two_tower"
    fields = read_fields(config, _DEFAULTS, model)
    encoder_kwargs = parse_encoder_kwargs(fields["encoder_kwargs"], model, _TOWERS)
    embed_dim = positive_int(fields["embed_dim"], "embed_dim", model)
    dtype = parse_dtype(fields["dtype"], model)
    if "text" not in spec.modalities and spec.vocab_size is not None:
        # Labelled images alone (zero-shot evaluation): a tokenizer gives the vocabulary.
        spec = dataclasses.replace(spec, modalities=(*spec.modalities, "text"))
    towers = build_encoders(
        {tower: fields[f"{tower}_encoder"] for tower in _TOWERS},
        encoder_kwargs,
        spec,
        features=embed_dim,
        dtype=dtype,
        model=model,
    )
    return TwoTower(
        image_encoder=towers["image"],
        text_encoder=towers["text"],
        init_temperature=_real(fields["init_temperature"], "init_temperature", model),
        init_bias=_real(fields["init_bias"], "init_bias", model),
        dtype=dtype,
    )
