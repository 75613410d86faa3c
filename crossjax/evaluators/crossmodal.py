"""Evaluators of cross-modal generation (models with a `generate` method, see crossjax.generation).

- "coherence": `coherence/<src>_to_<dst>` = the fraction of eval examples whose `dst`
  generated from `src` alone is classified as the example's label by a crossjax
  classifier of `dst` trained on the same dataset (Shi et al. 2019's cross coherence).
- "crossmodal_images": pictures of generations, one row per class.

A pair is "<sources>_to_<target>", sources joined by "+": "text_to_image",
"text+audio_to_image". The classifier (judge) of each target modality is a run of its
own, trained beforehand with scripts/train.py; the config names its workdir:
`{"image": {"workdir": "coherence/digits_image", "trained_with": "configs/digits_image.py"}}`.
A relative judge workdir is resolved against the parent of the evaluated run's workdir
(runs/digits_mvae finds its judge in runs/coherence/digits_image); an absolute one is
used as is. `trained_with` (optional) only names the judge's config in the error that
says how to train it. Evaluation never trains anything: without a checkpoint in the
judge's workdir it stops with that command.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossjax.errors import ConfigError, CrossjaxError
from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.generation import check_modalities, decode_ids, jitted_generate
from crossjax.metric_writer import image_grid
from crossjax.requirements import Requires, requires
from crossjax.sharding import to_host

log = logging.getLogger(__name__)

_CLASSIFIERS: dict[str, tuple[Any, Any]] = {}  # resolved workdir -> (experiment, train state)
CLASSIFIER_KEYS = ("workdir", "trained_with")


def parse_pair(pair: str, modalities: Sequence[str], what: str) -> tuple[tuple[str, ...], str]:
    """ "text+audio_to_image" -> (("text", "audio"), "image"), checked against `modalities`."""
    sources, sep, target = str(pair).partition("_to_")
    if not sep or not sources or not target:
        raise ConfigError(f"{what}: pair {pair!r} must read '<source>_to_<target>'")
    parsed = tuple(sources.split("+"))
    check_modalities(parsed, (target,), modalities, what)
    return parsed, target


def _pairs_requirements(kwargs: dict) -> Requires:
    """The label and every source modality of `pairs` (what generation encodes)."""
    keys = [kwargs.get("label_key", "label")]
    for pair in kwargs.get("pairs", ("text_to_image",)):
        keys += str(pair).partition("_to_")[0].split("+")
    return Requires(batch=tuple(dict.fromkeys(k for k in keys if k)))


def judge_workdir(entry: Any, modality: str, run_workdir: Path | None, what: str) -> Path:
    """The absolute workdir of the judge `entry` (see the module doc for the rules)."""
    if not isinstance(entry, Mapping) or not entry.get("workdir"):
        raise ConfigError(
            f"{what}: classifiers[{modality!r}] must be a dict with the 'workdir' of a trained "
            f"{modality} classifier run, got {entry!r}"
        )
    if "config" in entry:
        raise ConfigError(
            f"{what}: classifiers[{modality!r}] has a 'config' key, but evaluation no longer "
            f"trains its judge: train it once with python scripts/train.py --config "
            f"{entry['config']} --workdir <dir>, then keep only 'workdir' (and optionally "
            "'trained_with', the config named in errors)"
        )
    unknown = sorted(set(entry) - set(CLASSIFIER_KEYS))
    if unknown:
        raise ConfigError(
            f"{what}: classifiers[{modality!r}] has unknown keys {unknown}; valid: "
            f"{', '.join(CLASSIFIER_KEYS)}"
        )
    path = Path(entry["workdir"]).expanduser()
    if not path.is_absolute():
        if run_workdir is None:
            raise ConfigError(
                f"{what}: the judge workdir {str(path)!r} is relative, but this evaluation has "
                "no run workdir to resolve it against; give an absolute path"
            )
        path = Path(run_workdir).resolve().parent / path
    return path


def load_classifier(ctx: EvalContext, entry: Any, modality: str, what: str) -> tuple[Any, Any]:
    """(experiment, train state) of the judge run named by `entry`, restored through
    `ctx.restore_run`; a ConfigError with the command that trains it when it has no
    checkpoint. Cached per workdir."""
    workdir = judge_workdir(entry, modality, ctx.workdir, what)
    key = str(workdir)
    if key not in _CLASSIFIERS:
        if not (workdir / "checkpoints").is_dir():
            config = entry.get("trained_with") or f"configs/<a {modality} classifier config>"
            raise ConfigError(
                f"{what}: no trained {modality} classifier in {workdir}; train it first with "
                f"python scripts/train.py --config {config} --workdir {workdir}"
            )
        if ctx.restore_run is None:
            raise CrossjaxError(
                f"{what}: this evaluation gives evaluators no restore_run (EvalContext), so the "
                f"judge in {workdir} cannot be restored; evaluate through the trainer or "
                "crossjax.runs"
            )
        exp, step, state = ctx.restore_run(workdir)
        if modality not in exp.data.spec.modalities:
            raise ConfigError(
                f"{what}: the classifier in {workdir} reads {exp.data.spec.modalities}, "
                f"not {modality!r}"
            )
        log.info("%s: %s classifier from %s (step %d)", what, modality, workdir, step)
        _CLASSIFIERS[key] = (exp, state)
    return _CLASSIFIERS[key]


def _classifier_batch(target: str, generated: jax.Array) -> dict[str, jax.Array]:
    if target == "text":  # generated token ids; padding (0) ends the text
        return {"text": generated, "text_mask": generated != 0}
    return {target: generated}


def _check_vocab(ctx: EvalContext, exp: Any, workdir: str) -> None:
    ours, theirs = ctx.vocab, exp.data.vocab
    if (
        ours is not None
        and theirs is not None
        and ours.decode(range(len(ours))) != theirs.decode(range(len(theirs)))
    ):
        raise ConfigError(
            f"coherence: the text classifier in {workdir} has another vocabulary than this "
            "run; train it with the same data settings"
        )


@EVALUATORS.register("coherence")
@requires(_pairs_requirements)
def coherence(
    ctx: EvalContext,
    *,
    pairs: Sequence[str] = ("text_to_image",),
    classifiers: Mapping[str, Mapping[str, Any]] | None = None,
    label_key: str = "label",
    name: str = "coherence",
) -> dict[str, float]:
    """`<name>/<pair>` for each pair: accuracy of the target classifier on the targets
    generated (posterior mean, decoded mean) from the sources alone, over the eval split."""
    classifiers = dict(classifiers or {})
    parsed = [parse_pair(p, ctx.spec.modalities, name) for p in pairs]
    judges = {}
    for _, target in parsed:
        if target not in classifiers:
            raise ConfigError(
                f"{name}: no classifier for target {target!r}; add classifiers={{{target!r}: "
                "{'workdir': <a trained classifier run>}}"
            )
        if target not in judges:
            exp, state = load_classifier(ctx, classifiers[target], target, name)
            if target == "text":
                _check_vocab(ctx, exp, classifiers[target]["workdir"])
            judges[target] = (exp, state)
    correct = np.zeros(len(parsed))
    count = 0
    rng = jax.random.key(0)
    for batch, valid in ctx.batches():
        labels = to_host(batch[label_key])
        for i, (sources, target) in enumerate(parsed):
            out = jitted_generate(ctx.model, sources, (target,), False)(ctx.params, batch, rng)
            exp, judge = judges[target]
            generated = _classifier_batch(target, out[f"recon_mean/{target}"])
            logits = exp.predict(judge.params, generated, judge.model_state)
            predicted = to_host(jnp.argmax(logits["logits"], axis=-1))
            correct[i] += np.sum((predicted == labels) & valid)
        count += int(valid.sum())
    return {
        f"{name}/{pair}": float(c) / max(count, 1) for pair, c in zip(pairs, correct, strict=True)
    }


def _examples_per_class(
    ctx: EvalContext, label_key: str, per_class: int, num_classes: int
) -> dict[str, np.ndarray]:
    """The first `per_class` eval examples of each class, ordered by class (host numpy)."""
    taken: dict[int, list[dict[str, np.ndarray]]] = {c: [] for c in range(num_classes)}
    for batch, valid in ctx.batches():
        host = {k: to_host(v) for k, v in batch.items()}
        for row in np.flatnonzero(valid):
            label = int(host[label_key][row])
            if 0 <= label < num_classes and len(taken[label]) < per_class:
                taken[label].append({k: v[row] for k, v in host.items()})
        if all(len(v) == per_class for v in taken.values()):
            break
    rows = [ex for c in range(num_classes) for ex in taken[c]]
    if len(rows) < per_class * num_classes:
        raise ConfigError(
            f"crossmodal_images: the eval split lacks {per_class} examples of every class"
        )
    return {k: np.stack([ex[k] for ex in rows]) for k in rows[0]}


@EVALUATORS.register("crossmodal_images")
@requires(_pairs_requirements)
def crossmodal_images(
    ctx: EvalContext,
    *,
    pairs: Sequence[str] = ("text_to_image",),
    per_class: int = 8,
    label_key: str = "label",
) -> dict[str, float]:
    """For each pair, images/<pair>.png: one row per class, `per_class` generations from
    that class's first eval examples (an image source is shown first, left half). Text
    sources and text targets are written to images/<pair>.txt in the same order.
    Returns no metrics; writes nothing without a writer."""
    if ctx.writer is None or ctx.workdir is None:
        return {}
    num_classes = ctx.spec.num_classes
    if not num_classes:
        raise ConfigError("crossmodal_images: the dataset has no label to order rows by")
    parsed = [parse_pair(p, ctx.spec.modalities, "crossmodal_images") for p in pairs]
    batch = _examples_per_class(ctx, label_key, per_class, num_classes)
    batch = {k: v for k, v in batch.items() if k != label_key}
    for pair, (sources, target) in zip(pairs, parsed, strict=True):
        fn = jitted_generate(ctx.model, sources, (target,), False)
        out = fn(ctx.params, batch, jax.random.key(0))
        generated = np.asarray(jax.device_get(out[f"recon_mean/{target}"]))
        lines = []
        if "text" in sources:
            lines += [f"source: {t}" for t in decode_ids(ctx.vocab, batch["text"])]
        if target == "text":
            lines += [f"generated: {t}" for t in decode_ids(ctx.vocab, generated)]
        if lines:
            path = Path(ctx.workdir) / "images" / f"{pair}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
        if target.startswith("image"):
            rows = generated.reshape(num_classes, per_class, *generated.shape[1:])
            if "image" in sources:
                originals = batch["image"].reshape(rows.shape)
                rows = np.concatenate([originals, rows], axis=1)
            ctx.writer.write_image(ctx.step, pair, image_grid(list(rows)))
    return {}
