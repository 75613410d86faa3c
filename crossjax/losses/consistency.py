"""Pseudo-label consistency losses for partly labelled data (`present/label` (B,) bool).

- "fixmatch" (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with
  Consistency and Confidence"): cross-entropy on the labelled rows' weakly augmented
  view, plus on every row the weak view's prediction (no gradient) as a hard
  pseudo-label where its confidence >= `threshold`, taught to the strongly augmented
  view with weight `unlabeled_weight`.
- "cotraining" (cross-modal co-training, in the spirit of Blum & Mitchell 1998 with
  FixMatch's confidence and views): a model with one head per modality
  (`logits/<m>`, crossjax.models.modality_heads); each head learns the labelled rows
  from its weak view, and on every row where both modalities are present each head's
  confident weak-view prediction labels the OTHER modality's strongly augmented view.

Both draw their views with crossjax.augment from `ctx.rng` and run one extra forward
pass through `ctx.apply_fn` on the weak and strong views stacked (2B rows), as
FixMatch's own code does; the trainer's `outputs` (the clean view) are not used, so XLA
drops that forward pass. Why the loss and not the model makes the views: the model
stays the plain classifier (same checkpoints, evaluators and clean-input accuracy) and
the views are a property of the objective. Both are per-example, so they also run under
gradient accumulation (each micro-batch with its own views).

The supervised part is averaged over the labelled rows and the unsupervised part over
all rows (FixMatch's L_s + lambda_u L_u): a labelled row's cross-entropy is scaled by
(rows / labelled rows of the batch), so the trainer's plain mean over rows gives that
sum. An unlabelled row's `label` value reaches nothing. In evaluation every row is
labelled, so the loss is the supervised cross-entropy on the weak view plus the
consistency term; the accuracy the trainer reports there is on the clean inputs.
Metrics (per row, then averaged by the trainer): `supervised` (labelled mean),
`accuracy` (weak view, labelled rows), `consistency`, `pseudo_label_rate` (the
fraction of rows whose pseudo-label passes the threshold) and `pseudo_label_confidence`
(the mean top probability of the weak view); co-training reports them per modality
(`<metric>/<m>`, the rate and confidence of the labels that head m receives).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from crossjax.augment import augment_batch, resolve_settings
from crossjax.errors import ConfigError
from crossjax.losses.base import LOSSES, LossContext, Metrics, require_output
from crossjax.requirements import Requires, requires

Augmentation = str | Mapping[str, Any]


def labelled_row_weights(batch: Mapping[str, jax.Array], ctx: LossContext, size: int) -> jax.Array:
    """(B,) float32: rows / labelled rows where `present/label` (and `ctx.mask`) holds,
    else 0; the mean over rows of `weights * x` is the mean of x over labelled rows."""
    valid = jnp.ones((size,), bool) if ctx.mask is None else ctx.mask.astype(bool)
    labelled = valid & batch["present/label"].astype(bool) if "present/label" in batch else valid
    count = jnp.sum(labelled.astype(jnp.float32))
    return (
        labelled.astype(jnp.float32) * jnp.sum(valid.astype(jnp.float32)) / jnp.maximum(count, 1.0)
    )


def weak_and_strong_outputs(
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    weak: Augmentation,
    strong: Augmentation,
    loss: str,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """The model's training-mode outputs on the weak and on the strong view of `batch`
    (one forward pass through `ctx.apply_fn` on the 2B stacked rows)."""
    if ctx.apply_fn is None:
        raise ConfigError(f"loss {loss!r} needs ctx.apply_fn (the trainer provides it)")
    resolve_settings(weak), resolve_settings(strong)  # a bad setting fails before tracing
    k_weak, k_strong, k_dropout, k_sample = jax.random.split(ctx.rng, 4)
    views = (augment_batch(k_weak, batch, weak), augment_batch(k_strong, batch, strong))
    stacked = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *views)
    outputs = ctx.apply_fn(stacked, train=True, rngs={"dropout": k_dropout, "sample": k_sample})
    size = jax.tree.leaves(batch)[0].shape[0]
    weak_out = {k: v[:size] for k, v in outputs.items() if jnp.ndim(v) and v.shape[0] == 2 * size}
    strong_out = {k: v[size:] for k, v in outputs.items() if jnp.ndim(v) and v.shape[0] == 2 * size}
    return weak_out, strong_out


def pseudo_labels(logits: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(labels (B,) int32, confident (B,) float32 0/1, confidence (B,)) of `logits` (B, K),
    without gradient: the argmax class where its probability >= threshold."""
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits.astype(jnp.float32)))
    confidence = jnp.max(probs, axis=-1)
    labels = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    return labels, (confidence >= threshold).astype(jnp.float32), confidence


def _check_fractions(loss: str, threshold: float, unlabeled_weight: float) -> None:
    if not 0.0 <= threshold <= 1.0:  # 0: every pseudo-label counts
        raise ConfigError(f"loss {loss!r} has threshold={threshold}; valid: 0 <= threshold <= 1")
    if unlabeled_weight < 0:
        raise ConfigError(
            f"loss {loss!r} has unlabeled_weight={unlabeled_weight}; valid: a weight >= 0"
        )


def _labels(batch: Mapping[str, jax.Array], num_classes: int) -> jax.Array:
    # An unlabelled row may hold any value: clipped, it can never turn its (zero-weighted)
    # cross-entropy into NaN.
    return jnp.clip(batch["label"].astype(jnp.int32), 0, num_classes - 1)


@LOSSES.register("fixmatch")
@requires(Requires(batch=("label",), outputs=("logits",)))
def fixmatch(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    threshold: float = 0.95,
    unlabeled_weight: float = 1.0,
    weak: Augmentation = "weak",
    strong: Augmentation = "strong",
) -> tuple[jax.Array, Metrics]:
    """FixMatch on `logits` (B, K): (B,) values, labelled CE + unlabeled_weight x the
    confident pseudo-labels' CE on the strong view. `weak`/`strong`: "weak", "strong" or
    {modality: crossjax.augment settings} (every image/audio modality of the batch)."""
    _check_fractions("fixmatch", threshold, unlabeled_weight)
    require_output(outputs, "logits", "fixmatch")
    weak_out, strong_out = weak_and_strong_outputs(batch, ctx, weak, strong, "fixmatch")
    weak_logits, strong_logits = weak_out["logits"], strong_out["logits"]
    labels = _labels(batch, weak_logits.shape[-1])
    weights = labelled_row_weights(batch, ctx, labels.shape[0])
    supervised = optax.softmax_cross_entropy_with_integer_labels(weak_logits, labels)
    supervised = weights * supervised
    correct = (jnp.argmax(weak_logits, -1) == labels).astype(jnp.float32)
    targets, confident, confidence = pseudo_labels(weak_logits, threshold)
    consistency = confident * optax.softmax_cross_entropy_with_integer_labels(
        strong_logits, targets
    )
    values = supervised + unlabeled_weight * consistency
    return values, {
        "supervised": supervised,
        "accuracy": weights * correct,
        "consistency": consistency,
        "pseudo_label_rate": confident,
        "pseudo_label_confidence": confidence,
    }


def _cotraining_needs(kwargs: dict) -> Requires:
    modalities = kwargs.get("modalities", ("image", "audio"))
    return Requires(batch=("label", *modalities), outputs=tuple(f"logits/{m}" for m in modalities))


@LOSSES.register("cotraining")
@requires(_cotraining_needs)
def cotraining(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    ctx: LossContext,
    *,
    modalities: Sequence[str] = ("image", "audio"),
    threshold: float = 0.95,
    unlabeled_weight: float = 1.0,
    weak: Augmentation = "weak",
    strong: Augmentation = "strong",
) -> tuple[jax.Array, Metrics]:
    """Cross-modal co-training of heads `logits/<m>` (B, K): (B,) values, the sum over
    modalities of the labelled CE of each head and unlabeled_weight x its CE on its
    strong view against the other heads' confident weak-view pseudo-labels (with more
    than two modalities, the mean of the other heads' probabilities teaches)."""
    _check_fractions("cotraining", threshold, unlabeled_weight)
    modalities = tuple(modalities)
    if len(modalities) < 2 or len(set(modalities)) < len(modalities):
        raise ConfigError(
            f"loss 'cotraining' has modalities={modalities}; valid: two or more different ones"
        )
    for m in modalities:
        require_output(outputs, f"logits/{m}", "cotraining")
    weak_out, strong_out = weak_and_strong_outputs(batch, ctx, weak, strong, "cotraining")
    labels = _labels(batch, outputs[f"logits/{modalities[0]}"].shape[-1])
    size = labels.shape[0]
    weights = labelled_row_weights(batch, ctx, size)
    present = {
        m: batch[f"present/{m}"].astype(jnp.float32)
        if f"present/{m}" in batch
        else jnp.ones((size,), jnp.float32)
        for m in modalities
    }
    probs = {m: jax.nn.softmax(jax.lax.stop_gradient(weak_out[f"logits/{m}"])) for m in modalities}
    values = jnp.zeros((size,), jnp.float32)
    metrics: Metrics = {}
    for m in modalities:
        weak_logits = weak_out[f"logits/{m}"]
        supervised = (
            weights
            * present[m]
            * optax.softmax_cross_entropy_with_integer_labels(weak_logits, labels)
        )
        others = [o for o in modalities if o != m]
        teacher = sum(probs[o] * present[o][:, None] for o in others)
        teachers = sum(present[o] for o in others)
        teacher = teacher / jnp.maximum(teachers, 1.0)[:, None]
        confidence = jnp.max(teacher, axis=-1)
        targets = jnp.argmax(teacher, axis=-1)
        confident = (confidence >= threshold).astype(jnp.float32) * present[m] * (teachers > 0)
        consistency = confident * optax.softmax_cross_entropy_with_integer_labels(
            strong_out[f"logits/{m}"], targets
        )
        values = values + supervised + unlabeled_weight * consistency
        correct = (jnp.argmax(weak_logits, -1) == labels).astype(jnp.float32)
        metrics.update({
            f"supervised/{m}": supervised,
            f"accuracy/{m}": weights * present[m] * correct,
            f"consistency/{m}": consistency,
            f"pseudo_label_rate/{m}": confident,
            f"pseudo_label_confidence/{m}": confidence,
        })  # fmt: skip
    return values, metrics
