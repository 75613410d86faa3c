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

from crossjax.losses import LOSSES, LossContext, Metrics, batch_level, require_output
from crossjax.sharding import DATA_AXIS


def softmax_contrastive_loss(
    image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array
) -> jax.Array:
    """Symmetric InfoNCE (CLIP) on one device: image_emb, text_emb (B, D) -> scalar.

    mean over the batch of (CE(image i -> its text) + CE(text i -> its image)) / 2.
    """
    logits = logit_scale * image_emb @ text_emb.T  # (B, B)
    labels = jnp.arange(logits.shape[0])
    i2t = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    return jnp.mean(0.5 * (i2t + t2i))


def sigmoid_contrastive_loss(
    image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array
) -> jax.Array:
    """SigLIP on one device: -(1/B) sum_ij log sigmoid(z_ij (t <x_i, y_j> + b)), z = 2I - 1.

    image_emb, text_emb (B, D) -> scalar.
    """
    logits = logit_scale * image_emb @ text_emb.T + logit_bias  # (B, B)
    positives, negatives = _sigmoid_block_terms(logits, diagonal_positive=True)
    return (positives + negatives) / logits.shape[0]


def _sigmoid_block_terms(
    logits: jax.Array, *, diagonal_positive: bool
) -> tuple[jax.Array, jax.Array]:
    """Sums of -log sigmoid(z * logit) over the positive and over the negative pairs of a
    (b, b) block whose diagonal holds the positives when `diagonal_positive`.

    Summed apart because the negatives' terms are tiny (softplus(-10) ~ 5e-5): added one by
    one to the large positive terms in float32 they would lose ~1e-5 (relative) of the loss.
    """
    if not diagonal_positive:
        return jnp.zeros((), logits.dtype), -jnp.sum(jax.nn.log_sigmoid(-logits))
    eye = jnp.eye(logits.shape[0], dtype=bool)
    positives = -jnp.sum(jnp.where(eye, jax.nn.log_sigmoid(logits), 0.0))
    negatives = -jnp.sum(jnp.where(eye, 0.0, jax.nn.log_sigmoid(-logits)))
    return positives, negatives


def _num_shards(mesh) -> int:
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def sharded_softmax_contrastive_loss(
    image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, mesh
) -> jax.Array:
    """`softmax_contrastive_loss` with the batch split over `mesh` axis "data"."""
    if _num_shards(mesh) == 1:
        return softmax_contrastive_loss(image_emb, text_emb, logit_scale)

    def local(img, txt, scale):  # img, txt: this device's (b, D) rows
        b = img.shape[0]
        all_img = jax.lax.all_gather(img, DATA_AXIS, tiled=True)  # (B, D)
        all_txt = jax.lax.all_gather(txt, DATA_AXIS, tiled=True)
        labels = jax.lax.axis_index(DATA_AXIS) * b + jnp.arange(b)  # global column of own pair
        i2t = optax.softmax_cross_entropy_with_integer_labels(scale * img @ all_txt.T, labels)
        t2i = optax.softmax_cross_entropy_with_integer_labels(scale * txt @ all_img.T, labels)
        total = jax.lax.psum(jnp.sum(0.5 * (i2t + t2i)), DATA_AXIS)
        return total / (b * jax.lax.axis_size(DATA_AXIS))

    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS), P()), out_specs=P()
    )(image_emb, text_emb, logit_scale)


def sharded_sigmoid_contrastive_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    logit_scale: jax.Array,
    logit_bias: jax.Array,
    mesh,
) -> jax.Array:
    """`sigmoid_contrastive_loss` with the batch split over `mesh` axis "data" (a ring)."""
    n = _num_shards(mesh)
    if n == 1:
        return sigmoid_contrastive_loss(image_emb, text_emb, logit_scale, logit_bias)
    # Device k sends its current text block to k + 1, so after h hops it holds block k - h.
    ring = [(k, (k + 1) % n) for k in range(n)]

    def local(img, txt, scale, bias):
        b = img.shape[0]
        # The own block holds the positives on its diagonal.
        positives, negatives = _sigmoid_block_terms(
            scale * img @ txt.T + bias, diagonal_positive=True
        )

        def hop(carry, _):
            block, acc = carry
            block = jax.lax.ppermute(block, DATA_AXIS, ring)
            # Another device's texts: all negatives.
            _, more = _sigmoid_block_terms(scale * img @ block.T + bias, diagonal_positive=False)
            return (block, acc + more), None

        (_, negatives), _ = jax.lax.scan(hop, (txt, negatives), None, length=n - 1)
        return jax.lax.psum(positives + negatives, DATA_AXIS) / (b * n)

    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(), P()), out_specs=P()
    )(image_emb, text_emb, logit_scale, logit_bias)


def _pair(outputs: Mapping[str, jax.Array], loss: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    image = require_output(outputs, "emb/image", loss).astype(jnp.float32)
    text = require_output(outputs, "emb/text", loss).astype(jnp.float32)
    scale = require_output(outputs, "logit_scale", loss).astype(jnp.float32)
    return image, text, scale


def _positive_cosine(image: jax.Array, text: jax.Array) -> jax.Array:
    """Mean cosine of the matching pairs (a per-row quantity: no communication needed)."""
    return jnp.mean(jnp.sum(image * text, axis=-1))


@LOSSES.register("clip")
@batch_level
def clip(
    outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], ctx: LossContext
) -> tuple[jax.Array, Metrics]:
    """Softmax contrastive loss (CLIP) of `emb/image`, `emb/text` (B, D) and `logit_scale`.

    Metrics: `clip` (the loss), `logit_scale`, `positive_cosine`.
    """
    del batch
    image, text, scale = _pair(outputs, "clip")
    loss = sharded_softmax_contrastive_loss(image, text, scale, ctx.mesh)
    return loss, {
        "clip": loss,
        "logit_scale": scale,
        "positive_cosine": _positive_cosine(image, text),
    }


@LOSSES.register("siglip")
@batch_level
def siglip(
    outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], ctx: LossContext
) -> tuple[jax.Array, Metrics]:
    """Sigmoid contrastive loss (SigLIP) of `emb/image`, `emb/text` (B, D), `logit_scale`
    and `logit_bias`: the mean over images of the sum over all B texts.

    Metrics: `siglip` (the loss), `logit_scale`, `logit_bias`, `positive_cosine`.
    """
    del batch
    image, text, scale = _pair(outputs, "siglip")
    bias = require_output(outputs, "logit_bias", "siglip").astype(jnp.float32)
    loss = sharded_sigmoid_contrastive_loss(image, text, scale, bias, ctx.mesh)
    metrics = {
        "siglip": loss,
        "logit_scale": scale,
        "logit_bias": bias,
        "positive_cosine": _positive_cosine(image, text),
    }
    return loss, metrics
