"""The fusion zoo: modules that combine per-modality embeddings into one vector.

A fusion is a linen Module constructed with `dtype=...` (plus its own fields, set from
`config.model.fusion_kwargs`) and called as `fusion(embeddings, present) -> (B, F)`,
where both are dicts keyed by modality: embeddings (B, D_m) and present (B,) bool.
Every fusion but `concat` visits the modalities in sorted name order, because a dict
that crosses a `jax.jit` boundary comes back with sorted keys: the output must not
depend on how the caller built the dict. (`concat` keeps the caller's order, the
config's in the classifier, so that saved runs keep their meaning.) Every fusion here zeroes an absent modality's embedding itself
(`jnp.where`, so even NaN there is harmless): an absent modality never influences the
output through its values. Most append the presence bits (B, M) to their output so the
head can tell which modalities were there; `tfn` and `lmf` do not (their appended
constant 1 keeps the lower-order terms of the present modalities instead).

Optional hooks the model factory uses:
- `check(modalities)`: raises ValueError for field values that do not fit the model.
- a `features` field: set to the model's `features` unless fusion_kwargs sets it.
- `uses_raw_inputs = True` (class variable): the factory gives the classifier
  parameter-light raw feature extractors (`crossjax.models.fusion.RAW_FEATURES`)
  instead of encoders, so all learning happens after fusion (early fusion).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.models.encoders import MLP
from crossjax.registry import Registry

FUSIONS: Registry[type[nn.Module]] = Registry("fusion")

Embeddings = Mapping[str, jax.Array]
Presence = Mapping[str, jax.Array]


def masked(embeddings: Embeddings, present: Presence, dtype: Any) -> dict[str, jax.Array]:
    """Each (B, D_m) embedding with the rows of absent examples set to 0, sorted by name."""
    return {
        m: jnp.where(present[m][:, None], embeddings[m], 0).astype(dtype)
        for m in sorted(embeddings)
    }


def presence_bits(present: Presence, dtype: Any) -> jax.Array:
    """(B, M) 1.0 where the modality is present, modalities sorted by name."""
    return jnp.stack([present[m].astype(dtype) for m in sorted(present)], axis=-1)


def _check_positive(value: Any, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"has {field}={value!r}; valid: an int >= 1")


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenates each modality's embedding and its presence bit: (B, sum(D_m + 1)).

    Late (intermediate) fusion: every modality has its own encoder before this.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, embeddings: Embeddings, present: Presence) -> jax.Array:
        parts = []
        for modality, emb in embeddings.items():  # the caller's order (see module doc)
            keep = present[modality][:, None]
            parts.append(jnp.where(keep, emb, 0).astype(self.dtype))
            parts.append(keep.astype(self.dtype))
        return jnp.concatenate(parts, axis=-1)


@FUSIONS.register("early_concat")
class EarlyConcatFusion(nn.Module):
    """Early fusion: raw features concatenated (with presence bits), then one shared MLP.

    The classifier feeds it raw features (`crossjax.models.fusion.RAW_FEATURES`) instead of encoders: flattened pixels, the
    text's mean word embedding and the audio's pooled log spectrogram. Output
    (B, features); `emb/<m>` of the classifier are then those raw features.
    """

    uses_raw_inputs: ClassVar[bool] = True
    hidden: Sequence[int] = (256,)
    features: int = 128
    dtype: Any = jnp.float32

    def check(self, modalities: Sequence[str]) -> None:
        for width in (*self.hidden, self.features):
            _check_positive(width, "hidden/features")

    @nn.compact
    def __call__(self, embeddings: Embeddings, present: Presence) -> jax.Array:
        parts = [
            *masked(embeddings, present, self.dtype).values(),
            presence_bits(present, self.dtype),
        ]
        x = jnp.concatenate(parts, axis=-1)
        return MLP((*self.hidden, self.features), dtype=self.dtype, name="shared_encoder")(x)


@FUSIONS.register("sum")
class SumFusion(nn.Module):
    """Adds the embeddings of the present modalities: (B, D + M) with the presence bits.

    The embeddings must share a width D (the factory's encoders all output `features`);
    set `project_to` to first map each one linearly to that width (other encoders).
    """

    project_to: int | None = None
    dtype: Any = jnp.float32

    def check(self, modalities: Sequence[str]) -> None:
        if self.project_to is not None:
            _check_positive(self.project_to, "project_to")

    @nn.compact
    def __call__(self, embeddings: Embeddings, present: Presence) -> jax.Array:
        total = 0
        for m, emb in masked(embeddings, present, self.dtype).items():
            if self.project_to:
                emb = nn.Dense(self.project_to, dtype=self.dtype, name=f"project_{m}")(emb)
                emb = jnp.where(present[m][:, None], emb, 0)  # the bias of an absent one
            total = total + emb
        return jnp.concatenate([total, presence_bits(present, self.dtype)], axis=-1)


@FUSIONS.register("gated")
class GatedFusion(nn.Module):
    """Gated multimodal unit (Arevalo et al. 2017), generalised to M modalities.

    h_m = tanh(W_m x_m) (B, F); gates z (B, M, F) from one Dense on all inputs, a softmax
    over the present modalities (`gate="softmax"`) or an independent sigmoid each
    (`gate="sigmoid"`, the paper's form); output sum_m z_m * h_m plus presence bits:
    (B, features + M).
    """

    features: int = 128
    gate: str = "softmax"
    dtype: Any = jnp.float32

    def check(self, modalities: Sequence[str]) -> None:
        _check_positive(self.features, "features")
        if self.gate not in ("softmax", "sigmoid"):
            raise ValueError(f"has gate={self.gate!r}; valid: softmax, sigmoid")

    @nn.compact
    def __call__(self, embeddings: Embeddings, present: Presence) -> jax.Array:
        xs = masked(embeddings, present, self.dtype)
        bits = presence_bits(present, self.dtype)
        batch, num = bits.shape
        hs = jnp.stack(
            [
                nn.tanh(nn.Dense(self.features, dtype=self.dtype, name=f"transform_{m}")(x))
                for m, x in xs.items()
            ],
            axis=1,
        )  # (B, M, F)
        joint = jnp.concatenate([*xs.values(), bits], axis=-1)
        logits = nn.Dense(num * self.features, dtype=self.dtype, name="gate")(joint)
        logits = logits.reshape(batch, num, self.features)
        keep = bits[:, :, None] > 0
        if self.gate == "softmax":
            # Absent modalities get no weight; the final where covers rows with none present.
            z = jax.nn.softmax(jnp.where(keep, logits, -1e9), axis=1)
        else:
            z = nn.sigmoid(logits)
        fused = jnp.sum(jnp.where(keep, z * hs, 0), axis=1)
        return jnp.concatenate([fused, bits], axis=-1)


def _augmented(
    module: nn.Module, embeddings: Embeddings, present: Presence, dim: int | None
) -> list[jax.Array]:
    """[z_m; 1] per modality (B, d_m + 1), z_m = Dense(dim)(x_m) or x_m; 0 where absent."""
    out = []
    for m, x in masked(embeddings, present, module.dtype).items():
        if dim:
            x = nn.Dense(dim, dtype=module.dtype, name=f"project_{m}")(x)
            x = jnp.where(present[m][:, None], x, 0)
        out.append(jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=-1))
    return out


@FUSIONS.register("tfn")
class TensorFusion(nn.Module):
    """Tensor fusion (Zadeh et al. 2017): the flattened outer product of the [z_m; 1].

    z_m is x_m projected to `dim` (None: x_m itself). Output (B, prod_m(d_m + 1)): with
    dim=16 and three modalities 17^3 = 4913, which the head's first Dense multiplies.
    """

    dim: int | None = 16
    dtype: Any = jnp.float32

    def check(self, modalities: Sequence[str]) -> None:
        if self.dim is not None:
            _check_positive(self.dim, "dim")

    @nn.compact
    def __call__(self, embeddings: Embeddings, present: Presence) -> jax.Array:
        factors = _augmented(self, embeddings, present, self.dim)
        tensor = factors[0]
        for factor in factors[1:]:
            tensor = (tensor[:, :, None] * factor[:, None, :]).reshape(tensor.shape[0], -1)
        return tensor


@FUSIONS.register("lmf")
class LowRankFusion(nn.Module):
    """Low-rank multimodal fusion (Liu et al. 2018): a rank-`rank` factorisation of TFN
    followed by a Dense layer, without building the tensor.

    out = sum_r w_r prod_m ([z_m; 1] @ factor_m[r]) + bias, factor_m (rank, d_m + 1, F):
    (B, features). With rank >= prod(d_m + 1) / max(d_m + 1) it can express any TFN +
    Dense map exactly (full rank); z_m as in `TensorFusion` (dim=None: no projection).
    """

    rank: int = 4
    features: int = 128
    dim: int | None = None
    dtype: Any = jnp.float32

    def check(self, modalities: Sequence[str]) -> None:
        _check_positive(self.rank, "rank")
        _check_positive(self.features, "features")
        if self.dim is not None:
            _check_positive(self.dim, "dim")

    @nn.compact
    def __call__(self, embeddings: Embeddings, present: Presence) -> jax.Array:
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        product = 1.0
        augmented = _augmented(self, embeddings, present, self.dim)
        for m, aug in zip(sorted(embeddings), augmented, strict=True):
            factor = self.param(f"factor_{m}", init, (self.rank, aug.shape[-1], self.features))
            product = product * jnp.einsum("bd,rdf->brf", aug, factor.astype(self.dtype))
        # 1/sqrt(rank) keeps the sum of rank independent products at unit scale.
        weights = self.param(
            "rank_weights", nn.initializers.constant(self.rank**-0.5), (self.rank,)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        out = jnp.einsum("brf,r->bf", product, weights.astype(self.dtype))
        return out + bias.astype(self.dtype)


@FUSIONS.register("film")
class FiLMFusion(nn.Module):
    """FiLM (Perez et al. 2018): one modality's features scaled and shifted by the others.

    h = Dense(features)(x_c) of the `conditioned` modality (None: image if the model has
    it, else the first by name); gamma, beta = Dense(2 features)([other x; presence bits]), zero
    initialised so training starts from the identity; output relu(h * (1 + gamma) + beta)
    plus presence bits: (B, features + M). With one modality gamma = beta = 0.
    """

    conditioned: str | None = None
    features: int = 128
    dtype: Any = jnp.float32

    def check(self, modalities: Sequence[str]) -> None:
        _check_positive(self.features, "features")
        if self.conditioned is not None and self.conditioned not in modalities:
            raise ValueError(
                f"has conditioned={self.conditioned!r}; valid: one of the model's "
                f"modalities: {', '.join(modalities)}"
            )

    @nn.compact
    def __call__(self, embeddings: Embeddings, present: Presence) -> jax.Array:
        xs = masked(embeddings, present, self.dtype)
        target = self.conditioned or ("image" if "image" in xs else next(iter(xs)))
        bits = presence_bits(present, self.dtype)
        h = nn.Dense(self.features, dtype=self.dtype, name="project")(xs[target])
        others = [x for m, x in xs.items() if m != target]
        if others:
            film = nn.Dense(
                2 * self.features, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="film"
            )(jnp.concatenate([*others, bits], axis=-1))
            gamma, beta = jnp.split(film, 2, axis=-1)
            h = h * (1 + gamma) + beta
        return jnp.concatenate([nn.relu(h), bits], axis=-1)


@FUSIONS.register("cross_attention")
class CrossAttentionFusion(nn.Module):
    """Each modality's embedding is one token that attends to the other present tokens.

    Tokens (B, M, features): a Dense per modality plus a learned modality embedding.
    `num_layers` pre-LN blocks (multi-head attention to the other present modalities, or
    to itself when none is, then an MLP of width mlp_ratio * features), a final
    LayerNorm, and a mean over present tokens: (B, features + M) with presence bits.
    Absent tokens are never keys, so they cannot reach a present token.
    """

    features: int = 128
    num_heads: int = 4
    num_layers: int = 1
    mlp_ratio: int = 2
    dtype: Any = jnp.float32

    def check(self, modalities: Sequence[str]) -> None:
        for field in ("features", "num_heads", "num_layers", "mlp_ratio"):
            _check_positive(getattr(self, field), field)
        if self.features % self.num_heads:
            raise ValueError(
                f"has features={self.features} not divisible by num_heads={self.num_heads}"
            )

    @nn.compact
    def __call__(self, embeddings: Embeddings, present: Presence) -> jax.Array:
        xs = masked(embeddings, present, self.dtype)
        bits = presence_bits(present, self.dtype)
        keep = bits > 0  # (B, M)
        num = keep.shape[1]
        kind = self.param("modality_embedding", nn.initializers.normal(0.02), (num, self.features))
        tokens = jnp.stack(
            [
                nn.Dense(self.features, dtype=self.dtype, name=f"token_{m}")(x)
                for m, x in xs.items()
            ],
            axis=1,
        ) + kind.astype(self.dtype)
        other = ~jnp.eye(num, dtype=bool)  # (M, M): query q may look at key k != q
        others_present = keep[:, None, :] & other[None]  # (B, M, M)
        alone = ~jnp.any(others_present, axis=-1, keepdims=True)
        allowed = keep[:, None, :] & (other[None] | alone)
        for i in range(self.num_layers):
            y = nn.LayerNorm(dtype=self.dtype, name=f"attn_norm_{i}")(tokens)
            tokens = tokens + nn.MultiHeadDotProductAttention(
                num_heads=self.num_heads, dtype=self.dtype, name=f"attention_{i}"
            )(y, y, mask=allowed[:, None], deterministic=True)
            y = nn.LayerNorm(dtype=self.dtype, name=f"mlp_norm_{i}")(tokens)
            y = MLP(
                (self.mlp_ratio * self.features, self.features), dtype=self.dtype, name=f"mlp_{i}"
            )(y)
            tokens = tokens + y
        tokens = nn.LayerNorm(dtype=self.dtype, name="final_norm")(tokens)
        weights = bits / jnp.maximum(jnp.sum(bits, axis=1, keepdims=True), 1)
        pooled = jnp.einsum("bmf,bm->bf", jnp.where(keep[..., None], tokens, 0), weights)
        return jnp.concatenate([pooled, bits], axis=-1)
