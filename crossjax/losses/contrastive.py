"""Contrastive two-tower losses: CLIP (softmax) and SigLIP (sigmoid), sharded over devices.

Both read `emb/image` (B, D) and `emb/text` (B, D) (L2-normalised by the model; row i of
each is a matching pair) and the scalar `logit_scale` (t, already exponentiated), plus
`logit_bias` (b) for SigLIP. The logit of pair (i, j) is t * <x_i, y_j> (+ b).

A contrastive loss of one example depends on every other example of the batch, so both
are `batch_level`. Inside the trainer the batch is sharded over the mesh axis "data"
(`ctx.mesh`); the losses then run under `jax.shard_map` so that every device only holds
its own rows and value and gradients equal the single-device formula:

- CLIP all-gathers both towers' embeddings (B, D) -- small next to the encoders -- and
  each device computes the (B/n, B) logit rows of its own images and of its own texts.
- SigLIP never builds the B x B logits: each device keeps its images, and the text
  blocks travel around a ring of `ppermute`s (n - 1 hops), each device adding the loss of
  its (B/n, B/n) block per hop. Memory per device is O((B/n)^2), as in the SigLIP paper.

With `ctx.mesh` None (outside the trainer) or a single device, the plain formulas run.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from crossjax.losses.base import LOSSES, LossContext, Metrics, batch_level, require_output
from crossjax.requirements import Requires, requires
from crossjax.sharding import DATA_AXIS


def _all_rows(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    return jnp.ones(x.shape[:1], bool) if mask is None else mask.astype(bool)


# Masked logits get a large finite negative, not -inf: a padded row then stays finite and
# its (discarded) gradient is 0 instead of NaN.
_MASKED = -1e9


def softmax_contrastive_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    logit_scale: jax.Array,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Symmetric InfoNCE (CLIP) on one device: image_emb, text_emb (B, D) -> (B,).

    Example i: (CE(image i -> its text) + CE(text i -> its image)) / 2; the batch loss is
    the mean over examples. Rows where `mask` (B,) is False are neither anchors nor
    negatives and get 0.
    """
    mask = _all_rows(image_emb, mask)
    logits = logit_scale * image_emb @ text_emb.T  # (B, B)
    logits = jnp.where(mask[None, :] & mask[:, None], logits, _MASKED)
    labels = jnp.arange(logits.shape[0])
    i2t = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    return jnp.where(mask, 0.5 * (i2t + t2i), 0.0)


def sigmoid_contrastive_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    logit_scale: jax.Array,
    logit_bias: jax.Array,
    mask: jax.Array | None = None,
) -> jax.Array:
    """SigLIP on one device: example i's -sum_j log sigmoid(z_ij (t <x_i, y_j> + b)),
    z = 2I - 1, over the texts j where `mask` holds. image_emb, text_emb (B, D) -> (B,);
    the mean over examples is the paper's loss, -(1/B) sum_ij."""
    mask = _all_rows(image_emb, mask)
    logits = logit_scale * image_emb @ text_emb.T + logit_bias  # (B, B)
    positives, negatives = _sigmoid_block_terms(logits, mask, diagonal_positive=True)
    return jnp.where(mask, positives + negatives, 0.0)


def _sigmoid_block_terms(
    logits: jax.Array, column_mask: jax.Array, *, diagonal_positive: bool
) -> tuple[jax.Array, jax.Array]:
    """Per row (b,): sums of -log sigmoid(z * logit) over the positive and over the
    negative pairs of a (b, b) block whose diagonal holds the positives when
    `diagonal_positive`; columns where `column_mask` (b,) is False are left out.

    Summed apart because the negatives' terms are tiny (softplus(-10) ~ 5e-5): added one by
    one to the large positive terms in float32 they would lose ~1e-5 (relative) of the loss.
    """
    keep = column_mask[None, :]
    negative_terms = jnp.where(keep, jax.nn.log_sigmoid(-logits), 0.0)
    if not diagonal_positive:
        return jnp.zeros(logits.shape[:1], logits.dtype), -jnp.sum(negative_terms, axis=1)
    eye = jnp.eye(logits.shape[0], dtype=bool)
    positives = -jnp.sum(jnp.where(eye, jax.nn.log_sigmoid(logits), 0.0), axis=1)
    negatives = -jnp.sum(jnp.where(eye, 0.0, negative_terms), axis=1)
    return positives, negatives


def _num_shards(mesh) -> int:
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def sharded_softmax_contrastive_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    logit_scale: jax.Array,
    mesh,
    mask: jax.Array | None = None,
) -> jax.Array:
    """`softmax_contrastive_loss` with the batch split over `mesh` axis "data": (B,)."""
    mask = _all_rows(image_emb, mask)
    if _num_shards(mesh) == 1:
        return softmax_contrastive_loss(image_emb, text_emb, logit_scale, mask)

    def local(img, txt, scale, own):  # img, txt: this device's (b, D) rows; own: (b,)
        b = img.shape[0]
        all_img = jax.lax.all_gather(img, DATA_AXIS, tiled=True)  # (B, D)
        all_txt = jax.lax.all_gather(txt, DATA_AXIS, tiled=True)
        columns = jax.lax.all_gather(own, DATA_AXIS, tiled=True)[None, :]  # (1, B)
        labels = jax.lax.axis_index(DATA_AXIS) * b + jnp.arange(b)  # global column of own pair
        i2t_logits = jnp.where(columns, scale * img @ all_txt.T, _MASKED)
        t2i_logits = jnp.where(columns, scale * txt @ all_img.T, _MASKED)
        i2t = optax.softmax_cross_entropy_with_integer_labels(i2t_logits, labels)
        t2i = optax.softmax_cross_entropy_with_integer_labels(t2i_logits, labels)
        return jnp.where(own, 0.5 * (i2t + t2i), 0.0)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(), P(DATA_AXIS)),
        out_specs=P(DATA_AXIS),
    )(image_emb, text_emb, logit_scale, mask)


def sharded_sigmoid_contrastive_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    logit_scale: jax.Array,
    logit_bias: jax.Array,
    mesh,
    mask: jax.Array | None = None,
) -> jax.Array:
    """`sigmoid_contrastive_loss` with the batch split over `mesh` axis "data" (a ring): (B,)."""
    mask = _all_rows(image_emb, mask)
    n = _num_shards(mesh)
    if n == 1:
        return sigmoid_contrastive_loss(image_emb, text_emb, logit_scale, logit_bias, mask)
    # Device k sends its current text block to k + 1, so after h hops it holds block k - h.
    ring = [(k, (k + 1) % n) for k in range(n)]

    def local(img, txt, scale, bias, own):
        # The own block holds the positives on its diagonal.
        positives, negatives = _sigmoid_block_terms(
            scale * img @ txt.T + bias, own, diagonal_positive=True
        )

        def hop(carry, _):
            block, block_mask, acc = carry
            block = jax.lax.ppermute(block, DATA_AXIS, ring)
            block_mask = jax.lax.ppermute(block_mask, DATA_AXIS, ring)
            # Another device's texts: all negatives.
            _, more = _sigmoid_block_terms(
                scale * img @ block.T + bias, block_mask, diagonal_positive=False
            )
            return (block, block_mask, acc + more), None

        (_, _, negatives), _ = jax.lax.scan(hop, (txt, own, negatives), None, length=n - 1)
        return jnp.where(own, positives + negatives, 0.0)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(), P(), P(DATA_AXIS)),
        out_specs=P(DATA_AXIS),
    )(image_emb, text_emb, logit_scale, logit_bias, mask)


def _pair(outputs: Mapping[str, jax.Array], loss: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    image = require_output(outputs, "emb/image", loss).astype(jnp.float32)
    text = require_output(outputs, "emb/text", loss).astype(jnp.float32)
    scale = require_output(outputs, "logit_scale", loss).astype(jnp.float32)
    return image, text, scale


def _positive_cosine(image: jax.Array, text: jax.Array) -> jax.Array:
    """Cosine of each matching pair (B,) (a per-row quantity: no communication needed)."""
    return jnp.sum(image * text, axis=-1)


@LOSSES.register("clip")
@batch_level
@requires(Requires(outputs=("emb/image", "emb/text", "logit_scale")))
def clip(
    outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], ctx: LossContext
) -> tuple[jax.Array, Metrics]:
    """Softmax contrastive loss (CLIP) of `emb/image`, `emb/text` (B, D) and `logit_scale`,
    per example (B,), over the rows where `ctx.mask` holds.

    Metrics: `clip` (the loss), `logit_scale`, `positive_cosine`.
    """
    del batch
    image, text, scale = _pair(outputs, "clip")
    loss = sharded_softmax_contrastive_loss(image, text, scale, ctx.mesh, ctx.mask)
    return loss, {
        "clip": loss,
        "logit_scale": scale,
        "positive_cosine": _positive_cosine(image, text),
    }


@LOSSES.register("siglip")
@batch_level
@requires(Requires(outputs=("emb/image", "emb/text", "logit_scale", "logit_bias")))
def siglip(
    outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], ctx: LossContext
) -> tuple[jax.Array, Metrics]:
    """Sigmoid contrastive loss (SigLIP) of `emb/image`, `emb/text` (B, D), `logit_scale`
    and `logit_bias`: for each image, the sum over the texts (B,), over the rows where
    `ctx.mask` holds.

    Metrics: `siglip` (the loss), `logit_scale`, `logit_bias`, `positive_cosine`.
    """
    del batch
    image, text, scale = _pair(outputs, "siglip")
    bias = require_output(outputs, "logit_bias", "siglip").astype(jnp.float32)
    loss = sharded_sigmoid_contrastive_loss(image, text, scale, bias, ctx.mesh, ctx.mask)
    metrics = {
        "siglip": loss,
        "logit_scale": scale,
        "logit_bias": bias,
        "positive_cosine": _positive_cosine(image, text),
    }
    return loss, metrics
