"""Evaluators of two-tower (contrastive) models: retrieval, zero-shot and linear probe.

They need a model with `emb/image` outputs; "retrieval" also `emb/text`, and "zeroshot"
(and retrieval with several captions per image) a model with an `encode_text(text, mask)`
method (`crossjax.models.contrastive.TwoTower`) and a run with a vocabulary.

- "retrieval": image<->text recall@1/5/10 and mean/median rank on the first
  `max_examples` eval pairs (`crossjax.metrics.retrieval`).
- "zeroshot": classify images by the most similar class prompt, e.g. "a picture of a
  {}" filled with each class name, embedded by the text tower and averaged over templates.
- "linear_probe": logistic regression on frozen `emb/image` (or another output, e.g. a
  VAE's `z_mean`). The evaluator only sees the
  eval split, so it fits on the first `fit_fraction` of it and scores on the rest (not the
  usual train-split protocol; with crossjax_digits, noisy draws of one source image can
  fall in both parts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from crossjax.data.tokenizers import has_known_tokens
from crossjax.errors import ConfigError
from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.evaluators.prompt_files import read_string_list
from crossjax.metrics.retrieval import retrieval_metrics
from crossjax.registry import import_from_path
from crossjax.requirements import Requires, requires
from crossjax.sharding import DATA_AXIS, to_host

log = logging.getLogger(__name__)

TEXT_CHUNK = 256  # captions per text-tower call: one compiled shape for every call
_ENCODE_TEXT_CACHE: dict[int, tuple[Any, Any]] = {}  # id(model) -> (model, jitted fn)


def _jitted_encode_text(model: Any):
    """`jax.jit` of the model's `encode_text`, built once per model object."""
    cached = _ENCODE_TEXT_CACHE.get(id(model))
    if cached is None or cached[0] is not model:
        if not hasattr(model, "encode_text"):
            raise ConfigError(
                f"this evaluator needs a model with an encode_text method (e.g. two_tower); "
                f"{type(model).__name__} has none"
            )

        def encode(variables, text, mask):
            return model.apply(variables, text, mask, method="encode_text")

        cached = (model, jax.jit(encode))
        _ENCODE_TEXT_CACHE.clear()  # one run at a time: keep only the current model alive
        _ENCODE_TEXT_CACHE[id(model)] = cached
    return cached[1]


def encode_texts(ctx: EvalContext, text: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Text-tower embeddings of token ids (N, L) int32 with mask (N, L) bool: (N, D) numpy.

    Runs in chunks of `TEXT_CHUNK` rows (the last one padded), split over the mesh.
    """
    encode = _jitted_encode_text(ctx.model)
    n = len(text)
    devices = ctx.mesh.devices.size if ctx.mesh is not None else 1
    chunk = -(-TEXT_CHUNK // devices) * devices
    out = []
    for start in range(0, max(n, 1), chunk):
        ids = np.zeros((chunk, text.shape[1]), np.int32)
        keep = np.zeros((chunk, text.shape[1]), bool)
        rows = slice(start, min(start + chunk, n))
        ids[: rows.stop - rows.start], keep[: rows.stop - rows.start] = text[rows], mask[rows]
        if ctx.mesh is not None:  # every process holds the whole chunk: take its shards
            sharding = NamedSharding(ctx.mesh, PartitionSpec(DATA_AXIS))
            ids, keep = (
                jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx])
                for a in (ids, keep)
            )
        out.append(to_host(encode(ctx.variables(), ids, keep))[: rows.stop - rows.start])
    return np.concatenate(out)[:n]


def _head(values: dict[str, np.ndarray], max_examples: int | None) -> dict[str, np.ndarray]:
    """The first `max_examples` rows of every entry (all rows for None or 0)."""
    return {k: v[:max_examples] for k, v in values.items()} if max_examples else values


@EVALUATORS.register("retrieval")
@requires(Requires(outputs=("emb/image",)))  # and emb/text or captions: checked when read
def retrieval(
    ctx: EvalContext, *, max_examples: int | None = 1000, name: str = "retrieval"
) -> dict[str, float]:
    """Image<->text retrieval among the first `max_examples` eval pairs (None or 0: all).

    Uses every caption of batches with `captions` (B, C, L) and `captions_mask` (B, C, L)
    (padded captions have an all-False mask), else `text` as the one caption per image.
    Keys `<name>/i2t_r1`, `_r5`, `_r10`, `_mean_rank`, `_median_rank`, and `t2i_*`.
    """
    keys = ("emb/image", "emb/text", "captions", "captions_mask")
    values = _head(ctx.gather(keys), max_examples)
    image = values["emb/image"]  # (N, D), unit rows
    if "captions" in values:
        captions, mask = values["captions"], values["captions_mask"].astype(bool)
        real = mask.any(axis=-1)  # (N, C)
        text_to_image = np.nonzero(real)[0]
        text = encode_texts(ctx, captions[real], mask[real])
    elif "emb/text" in values:
        text, text_to_image = values["emb/text"], np.arange(len(image))
    else:
        raise ConfigError("retrieval needs a model with emb/image and emb/text outputs")
    metrics = retrieval_metrics(image @ text.T, text_to_image)
    return {f"{name}/{k}": v for k, v in metrics.items()}


def _labelled_requirements(embedding: str, kwargs: dict) -> Requires:
    """`embedding` from the model, the label (and `filter_key`) from the batch."""
    batch = [kwargs.get("label_key", "label")]
    if kwargs.get("filter_key"):
        batch.append(kwargs["filter_key"])
    return Requires(batch=tuple(dict.fromkeys(batch)), outputs=(embedding,))


def resolve_class_names(
    class_names: Sequence[str] | None,
    class_names_from: str | None,
    evaluator: str,
    class_names_file: str | None = None,
) -> list[str]:
    """The class names given directly, imported from a "package.module:NAME" sequence, or
    read from a file (one per line, a JSON list or an open_clip-style .py list)."""
    given = [v is not None for v in (class_names, class_names_from, class_names_file)]
    if sum(given) != 1:
        raise ConfigError(
            f"{evaluator}: give exactly one of class_names, class_names_from or class_names_file"
        )
    if class_names_file is not None:
        names = read_string_list(class_names_file, f"{evaluator}: class_names_file")
    elif class_names is not None:
        names = class_names
    else:
        names = import_from_path(class_names_from, "names")
    names = [str(n) for n in names]
    if not names:
        raise ConfigError(f"{evaluator}: the list of class names is empty")
    return names


def resolve_templates(
    templates: Sequence[str] | None, templates_file: str | None, evaluator: str
) -> list[str]:
    """Prompt templates given directly or read from `templates_file` (default: "{}"), each
    with one "{}" for the class name."""
    if templates is not None and templates_file is not None:
        raise ConfigError(f"{evaluator}: give templates or templates_file, not both")
    if templates_file is not None:
        templates = read_string_list(templates_file, f"{evaluator}: templates_file")
    templates = [str(t) for t in (("{}",) if templates is None else templates)]
    if not templates:
        raise ConfigError(f"{evaluator}: the list of templates is empty")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ConfigError(f"{evaluator}: template {bad[0]!r} has no '{{}}' for the class name")
    return templates


def gather_labelled(
    ctx: EvalContext,
    extra: tuple[str, ...],
    *,
    label_key: str,
    index: int | None,
    filter_key: str | None,
    filter_value: Any,
    max_examples: int | None,
    evaluator: str,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Gathered `extra` outputs and (N,) int labels of the eval examples kept by the filter.

    label = batch[label_key] (or batch[label_key][:, index] for per-object attributes such
    as `attr/color`); rows with a negative label (absent object) are dropped, and with
    `filter_key` only rows where batch[filter_key] == filter_value are kept.
    """
    keys = (*extra, label_key) + ((filter_key,) if filter_key else ())
    values = _head(ctx.gather(keys), max_examples)  # the keys are declared: see @requires
    labels = np.asarray(values[label_key])
    if index is not None:
        labels = labels[:, index]
    if labels.ndim != 1:
        raise ConfigError(f"{evaluator}: {label_key} has shape {labels.shape}; set index=")
    keep = labels >= 0
    if filter_key:
        keep &= np.asarray(values[filter_key]) == filter_value
    return {k: np.asarray(values[k])[keep] for k in extra}, labels[keep].astype(np.int64)


def class_prompt_embeddings(
    ctx: EvalContext, class_names: Sequence[str], templates: Sequence[str]
) -> np.ndarray:
    """(K, D) unit rows: each class's prompts embedded, averaged over templates, renormalised."""
    if ctx.vocab is None:
        raise ConfigError("zeroshot needs a run with text (a vocabulary) to tokenise prompts")
    max_len = ctx.spec.max_text_len
    prompts = [t.format(c) for c in class_names for t in templates]
    encoded = [ctx.vocab.encode(p, max_len) for p in prompts]
    text = np.stack([ids for ids, _ in encoded])
    mask = np.stack([m for _, m in encoded])
    unknown = [c for c in class_names if not has_known_tokens(ctx.vocab, c, max_len)]
    if unknown:  # an unknown class word makes that class's prompts indistinguishable
        log.warning("zeroshot: class names not in the vocabulary: %s", ", ".join(unknown))
    emb = encode_texts(ctx, text, mask).reshape(len(class_names), len(templates), -1)
    emb = emb.mean(axis=1)
    return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)


@EVALUATORS.register("zeroshot")
@requires(lambda kwargs: _labelled_requirements("emb/image", kwargs))
def zeroshot(
    ctx: EvalContext,
    *,
    class_names: Sequence[str] | None = None,
    class_names_from: str | None = None,
    class_names_file: str | None = None,
    templates: Sequence[str] | None = None,
    templates_file: str | None = None,
    label_key: str = "label",
    index: int | None = None,
    filter_key: str | None = None,
    filter_value: Any = None,
    max_examples: int | None = None,
    name: str = "zeroshot",
) -> dict[str, float]:
    """Zero-shot accuracy: argmax over classes of <emb/image, class prompt embedding>.

    Class names come from `class_names`, `class_names_from` ("package.module:NAME") or
    `class_names_file`; templates from `templates` or `templates_file` (default "{}"); a
    file holds one entry per line, a JSON list or an open_clip-style .py list
    (crossjax.evaluators.prompt_files).
    Prompts are the templates ("a picture of a {}") filled with the class names, tokenised
    with the run's vocabulary at `spec.max_text_len`. Class k is the k-th name, so the
    names must follow the label's index order. Keys `<name>/accuracy`, `<name>/num_examples`.
    """
    names = resolve_class_names(class_names, class_names_from, name, class_names_file)
    templates = resolve_templates(templates, templates_file, name)
    values, labels = gather_labelled(
        ctx,
        ("emb/image",),
        label_key=label_key,
        index=index,
        filter_key=filter_key,
        filter_value=filter_value,
        max_examples=max_examples,
        evaluator=name,
    )
    if labels.size and labels.max() >= len(names):
        raise ConfigError(f"{name}: label {labels.max()} but only {len(names)} class names")
    classes = class_prompt_embeddings(ctx, names, templates)  # (K, D)
    predictions = np.argmax(values["emb/image"] @ classes.T, axis=-1)
    accuracy = float(np.mean(predictions == labels)) if labels.size else float("nan")
    return {f"{name}/accuracy": accuracy, f"{name}/num_examples": float(labels.size)}


@EVALUATORS.register("linear_probe")
@requires(lambda kwargs: _labelled_requirements(kwargs.get("embedding", "emb/image"), kwargs))
def linear_probe(
    ctx: EvalContext,
    *,
    label_key: str = "label",
    index: int | None = None,
    filter_key: str | None = None,
    filter_value: Any = None,
    fit_fraction: float = 0.5,
    C: float = 1.0,
    max_examples: int | None = None,
    embedding: str = "emb/image",
    name: str = "linear_probe",
) -> dict[str, float]:
    """Accuracy of a logistic regression (scikit-learn) on a frozen, standardised model
    output (`embedding`: "emb/image", or "z_mean" for a VAE's latent), fitted on the first
    `fit_fraction` of the (filtered) eval split and scored on the rest.

    Keys `<name>/accuracy`, `<name>/num_fit`, `<name>/num_scored`.
    """
    from sklearn.linear_model import LogisticRegression  # local: sklearn is slow to import
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 0 < fit_fraction < 1:
        raise ConfigError(f"{name}: fit_fraction={fit_fraction}; valid: 0 < value < 1")
    values, labels = gather_labelled(
        ctx,
        (embedding,),
        label_key=label_key,
        index=index,
        filter_key=filter_key,
        filter_value=filter_value,
        max_examples=max_examples,
        evaluator=name,
    )
    features = values[embedding].reshape(len(labels), -1)
    split = int(round(fit_fraction * len(labels)))
    if split == 0 or split == len(labels) or len(np.unique(labels[:split])) < 2:
        raise ConfigError(f"{name}: too few examples or classes to fit ({len(labels)} kept)")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    probe.fit(features[:split], labels[:split])
    accuracy = float(np.mean(probe.predict(features[split:]) == labels[split:]))
    return {
        f"{name}/accuracy": accuracy,
        f"{name}/num_fit": float(split),
        f"{name}/num_scored": float(len(labels) - split),
    }
