"""Captioning evaluator: generate text for the eval split and score it against references.

For models with a `generate(batch, *, beam_size, alpha)` method (`crossjax.models.rnn`:
"captioner", "seq_autoencoder"). Captions are generated greedily and with beam search,
decoded with the run's vocabulary, and compared with the references: every caption of
the example when the batches carry `captions` (`data.all_captions`), else its `text`.

`config.evaluators = (("captioning", {"beam_size": 4, "attribute_accuracy": True}),)`
returns `<name>/bleu4_greedy`, `<name>/bleu4_beam`, `<name>/cider_greedy`,
`<name>/cider_beam`, `<name>/exact_match_greedy`, `<name>/exact_match_beam` (fraction of
examples whose generated text equals a reference). With `attribute_accuracy` (shapes
scenes; needs `data.extra_features` = color, shape, size, relation, num_objects):
`caption_attribute_accuracy` (beam), `caption_attribute_accuracy_greedy` and the per-
attribute `<name>/attribute_<a>_greedy` / `_beam` (see `caption_attribute_accuracy`).
With a writer, the generated texts and references of the first `num_pictures` examples
go to WORKDIR/images/<name>.txt, one line each, and their images (if the batches have
`image`) to images/<name>.png, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from crossjax.errors import ConfigError
from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.metric_writer import image_grid
from crossjax.metrics.captioning import (
    SCENE_ATTRIBUTES,
    caption_attribute_accuracy,
    cider_d,
    corpus_bleu,
)
from crossjax.models.decoding import DEFAULT_ALPHA, check_alpha, check_beam_size
from crossjax.requirements import Requires, requires
from crossjax.sharding import to_host

_GENERATE_CACHE: dict[tuple[int, int, float], tuple[Any, Any]] = {}


def _jitted_generate(model: Any, beam_size: int, alpha: float):
    """`jax.jit` of `model.generate` for one beam size and alpha, built once per model."""
    key = (id(model), beam_size, alpha)
    cached = _GENERATE_CACHE.get(key)
    if cached is None or cached[0] is not model:
        if not hasattr(model, "generate"):
            raise ConfigError(
                f"evaluator 'captioning' needs a model with a generate method (captioner, "
                f"seq_autoencoder); {type(model).__name__} has none"
            )

        def generate(variables, batch):
            return model.apply(
                variables, batch, method="generate", beam_size=beam_size, alpha=alpha
            )

        if any(k[0] != id(model) for k in _GENERATE_CACHE):  # one run at a time
            _GENERATE_CACHE.clear()
        cached = (model, jax.jit(generate))
        _GENERATE_CACHE[key] = cached
    return cached[1]


def _references(batch: dict, valid: np.ndarray, vocab: Any) -> list[list[str]]:
    """Every non-empty reference caption of each valid row."""
    if "captions" not in batch and "text" not in batch:
        raise ConfigError("captioning needs reference captions: batches with captions or text")
    if "captions" in batch:
        ids = to_host(batch["captions"])[valid]
        mask = to_host(batch["captions_mask"]).astype(bool)[valid]
        return [
            [vocab.decode(np.where(m, c, 0)) for c, m in zip(row, rows, strict=True) if m.any()]
            for row, rows in zip(ids, mask, strict=True)
        ]
    text = to_host(batch["text"])[valid]
    mask = to_host(batch["text_mask"]).astype(bool)[valid]
    return [[vocab.decode(np.where(m, t, 0))] for t, m in zip(text, mask, strict=True)]


def _write_samples(
    ctx: EvalContext, name: str, images: np.ndarray | None, lines: Sequence[str]
) -> None:
    """WORKDIR/images/<name>.txt (one line per example) and <name>.png (a row of images)."""
    if not getattr(ctx.writer, "enabled", True):  # only process 0 writes
        return
    path = ctx.workdir / "images" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    if images is not None:
        ctx.writer.write_image(ctx.step, name, image_grid([images]))


def _captioning_requirements(kwargs: dict) -> Requires:
    """The scene attributes with `attribute_accuracy`. The references (`captions`, else
    `text`) are one of two keys, which a declaration cannot say; they are checked when read."""
    if kwargs.get("attribute_accuracy", False):
        return Requires(batch=tuple(f"attr/{k}" for k in SCENE_ATTRIBUTES))
    return Requires()


@EVALUATORS.register("captioning")
@requires(_captioning_requirements)
def captioning(
    ctx: EvalContext,
    *,
    beam_size: int = 4,
    alpha: float = DEFAULT_ALPHA,
    attribute_accuracy: bool = False,
    num_pictures: int = 16,
    max_examples: int | None = None,
    name: str = "captioning",
) -> dict[str, float]:
    """Greedy and beam-search (`beam_size`, length penalty `alpha`) captions of the first
    `max_examples` eval examples (None: all) scored by BLEU-4, CIDEr-D, exact match and,
    with `attribute_accuracy`, the shapes attribute accuracy. Keys: see the module doc."""
    beam_size, alpha = check_beam_size(beam_size), check_alpha(alpha)
    if ctx.vocab is None:
        raise ConfigError("evaluator 'captioning' needs a run with text (a vocabulary)")
    greedy_fn = _jitted_generate(ctx.model, 1, alpha)
    beam_fn = _jitted_generate(ctx.model, beam_size, alpha)
    greedy, beam, references, pictures = [], [], [], []
    truth: dict[str, list[np.ndarray]] = {k: [] for k in SCENE_ATTRIBUTES}
    for batch, valid in ctx.batches():
        if attribute_accuracy:
            for k in SCENE_ATTRIBUTES:
                truth[k].append(to_host(batch[f"attr/{k}"])[valid])
        greedy += [
            ctx.vocab.decode(ids) for ids in to_host(greedy_fn(ctx.variables(), batch))[valid]
        ]
        beam += [ctx.vocab.decode(ids) for ids in to_host(beam_fn(ctx.variables(), batch))[valid]]
        references += _references(batch, valid, ctx.vocab)
        if "image" in batch and sum(len(p) for p in pictures) < num_pictures:
            pictures.append(to_host(batch["image"])[valid])
        if max_examples and len(greedy) >= max_examples:
            break
    n = min(len(greedy), max_examples or len(greedy))
    greedy, beam, references = greedy[:n], beam[:n], references[:n]
    metrics = {}
    for kind, hypotheses in (("greedy", greedy), ("beam", beam)):
        metrics[f"{name}/bleu4_{kind}"] = corpus_bleu(hypotheses, references)
        metrics[f"{name}/cider_{kind}"] = cider_d(hypotheses, references)
        metrics[f"{name}/exact_match_{kind}"] = float(
            np.mean([h in refs for h, refs in zip(hypotheses, references, strict=True)])
        )
    if attribute_accuracy:
        scenes = {k: np.concatenate(v)[:n] for k, v in truth.items()}
        for kind, hypotheses in (("greedy", greedy), ("beam", beam)):
            accuracy = caption_attribute_accuracy(hypotheses, scenes)
            for key, value in accuracy.items():
                if key != "all":
                    metrics[f"{name}/attribute_{key}_{kind}"] = value
            suffix = "_greedy" if kind == "greedy" else ""
            metrics[f"caption_attribute_accuracy{suffix}"] = accuracy["all"]
    if ctx.writer is not None and ctx.workdir is not None and num_pictures:
        shown = min(num_pictures, n)
        images = np.concatenate(pictures)[:shown] if pictures else None
        lines = [
            f"{i}: greedy: {greedy[i]} | beam: {beam[i]} | reference: {' / '.join(references[i])}"
            for i in range(shown)
        ]
        _write_samples(ctx, name, images, lines)
    return metrics
