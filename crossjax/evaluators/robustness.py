"""Robustness of a classifier to a missing or noisy modality (MultiBench's question).

`config.evaluators = ("robustness",)` or `(("robustness", {"scales": (0, 1, 2)}),)`.
On the eval split it measures the accuracy
- with each modality removed: `present/<m>` False for every example;
- with each modality corrupted at every noise scale s in `scales`:
  image / audio: additive Gaussian noise of std s * (the modality's std over the split),
  not clipped; text: each real token (text_mask True) replaced with probability
  s / max(scales) by a word id drawn uniformly from [2, vocab_size) (0 is padding and 1
  the unknown word), so the largest scale replaces every word.
Noise comes from numpy generators seeded by (seed, modality, scale, batch), so it is the
same at every evaluation and for every model.

Metrics: `robustness/clean_accuracy`, `robustness/without_<m>`,
`robustness/<m>_noise_<s>` per point and `robustness/<m>_auc`: the trapezoid area under
accuracy vs scale divided by max(scales) * clean accuracy (1.0: noise never hurts).
Files, when `ctx.workdir` is set: WORKDIR/robustness.json (the curves) and
WORKDIR/images/robustness.png.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.requirements import Requires, requires
from crossjax.sharding import to_host

log = logging.getLogger(__name__)

DEFAULT_SCALES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
NOISY_MODALITIES = ("image", "text", "audio")
_FIRST_WORD_ID = 2  # ids 0 and 1 are padding and the unknown word

Batch = dict[str, Any]
Transform = Callable[[int, Batch], Batch]


def _on_device_like(value: np.ndarray, reference: Any) -> Any:
    """`value` (the full global array, on every process) placed like `reference`."""
    if isinstance(reference, jax.Array):
        return jax.make_array_from_callback(value.shape, reference.sharding, lambda i: value[i])
    return value


def _host(value: Any) -> np.ndarray:
    return to_host(value) if isinstance(value, jax.Array) else np.asarray(value)


def _with_presence(batch: Batch, modalities: Sequence[str], removed: str | None) -> Batch:
    """Adds `present/<m>` for every modality (so predict traces once), False for `removed`."""
    out = dict(batch)
    reference = batch[modalities[0]]
    size = reference.shape[0]
    for m in modalities:
        key = f"present/{m}"
        keep = _host(batch[key]).astype(bool) if key in batch else np.ones(size, bool)
        out[key] = _on_device_like(keep & (m != removed), batch.get(key, reference))
    return out


def _accuracy(ctx: EvalContext, batches: list[tuple[Batch, np.ndarray]], transform: Transform):
    correct = total = 0
    for index, (batch, valid) in enumerate(batches):
        outputs = ctx.predict(transform(index, batch))
        predicted = _host(outputs["logits"]).argmax(axis=-1)
        label = _host(batch["label"])
        correct += int(np.sum((predicted == label)[valid]))
        total += int(np.sum(valid))
    return correct / max(total, 1)


def _noisy(
    batch: Batch, modality: str, scale: float, rng: np.random.Generator, stats: dict
) -> Batch:
    """`batch` with `modality` corrupted at `scale` (see the module docstring)."""
    out = dict(batch)
    x = _host(batch[modality])
    if modality == "text":
        mask = _host(batch["text_mask"]).astype(bool) if "text_mask" in batch else x != 0
        replace = mask & (rng.random(x.shape) < scale / stats["max_scale"])
        random_ids = rng.integers(_FIRST_WORD_ID, stats["vocab_size"], x.shape)
        noisy = np.where(replace, random_ids, x).astype(x.dtype)
    else:
        noise = rng.normal(0.0, scale * stats[modality], x.shape)
        noisy = (x + noise).astype(x.dtype)
    out[modality] = _on_device_like(noisy, batch[modality])
    return out


def normalised_auc(scales: Sequence[float], accuracy: Sequence[float], clean: float) -> float:
    """Trapezoid area under accuracy(scale) / (max(scales) * clean); nan if clean is 0."""
    if clean <= 0:
        return float("nan")
    s, a = np.asarray(scales, np.float64), np.asarray(accuracy, np.float64)
    area = float(np.sum((s[1:] - s[:-1]) * (a[1:] + a[:-1]) / 2))
    return area / (float(s.max()) * clean)


def _scales(scales: Sequence[float]) -> list[float]:
    values = sorted({0.0, *(float(s) for s in scales)})  # the clean point anchors each curve
    if values[0] < 0 or len(values) < 2:
        raise ValueError(f"robustness: scales={tuple(scales)} must be >= 0 with one above 0")
    return values


def _robustness_requirements(kwargs: dict) -> Requires:
    """A classifier, labels and the `modalities` perturbed (by default, those present)."""
    return Requires(batch=("label", *(kwargs.get("modalities") or ())), outputs=("logits",))


@EVALUATORS.register("robustness")
@requires(_robustness_requirements)
def robustness(
    ctx: EvalContext,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    modalities: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy without each modality and under noise of each scale; see the module doc.

    modalities: which to remove and corrupt (default: the dataset's image/text/audio).
    """
    grid = _scales(scales)
    batches = list(ctx.batches())
    first = batches[0][0]
    if modalities is None:
        modalities = [m for m in NOISY_MODALITIES if m in first]
    modalities = list(modalities)
    bad = [m for m in modalities if m not in first or m not in NOISY_MODALITIES]
    if bad:
        raise ValueError(f"robustness: cannot perturb {bad[0]!r}; the batch has {sorted(first)}")
    stats: dict[str, Any] = {"max_scale": grid[-1]}
    for m in modalities:
        if m == "text":
            stats["vocab_size"] = max(int(ctx.spec.vocab_size), _FIRST_WORD_ID + 1)
        else:  # std over the real rows of the split, so noise is relative to the signal
            stats[m] = float(np.std(np.concatenate([_host(b[m])[v] for b, v in batches])))

    def present_all(_: int, b: Batch) -> Batch:
        return _with_presence(b, modalities, None)

    clean = _accuracy(ctx, batches, present_all)
    without = {
        m: _accuracy(ctx, batches, lambda _, b, m=m: _with_presence(b, modalities, m))
        for m in modalities
    }
    curves: dict[str, list[float]] = {}
    for mi, m in enumerate(modalities):
        curves[m] = [clean]
        for si, scale in enumerate(grid[1:], start=1):

            def corrupt(bi: int, b: Batch, m=m, mi=mi, si=si, scale=scale) -> Batch:
                rng = np.random.default_rng([seed, mi, si, bi])
                return _noisy(_with_presence(b, modalities, None), m, scale, rng, stats)

            curves[m].append(_accuracy(ctx, batches, corrupt))
    auc = {m: normalised_auc(grid, curves[m], clean) for m in modalities}

    metrics = {"robustness/clean_accuracy": clean}
    for m in modalities:
        metrics[f"robustness/without_{m}"] = without[m]
        metrics[f"robustness/{m}_auc"] = auc[m]
        for scale, acc in zip(grid, curves[m], strict=True):
            metrics[f"robustness/{m}_noise_{scale:g}"] = acc
    if ctx.workdir is not None and jax.process_index() == 0:
        report = {
            "step": int(ctx.step),
            "scales": grid,
            "clean_accuracy": clean,
            "noise_accuracy": curves,
            "auc": auc,
            "without": without,
            "text_noise": "each real token replaced with probability scale / max(scales)",
            "image_audio_noise": "Gaussian, std = scale * the modality's std over the split",
        }
        (ctx.workdir / "robustness.json").write_text(json.dumps(report, indent=2))
        _plot(ctx, grid, curves, without)
    return metrics


def _plot(ctx: EvalContext, grid, curves: dict, without: dict) -> None:
    """Accuracy vs noise scale, one line per modality, dashed: accuracy without it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # matplotlib is a dev extra; the numbers are in robustness.json
        log.warning("robustness: matplotlib is not installed; no plot written")
        return
    # The object API (not pyplot) draws with Agg without touching the global backend.
    fig = Figure(figsize=(5, 3.5), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for m, accuracy in curves.items():
        (line,) = ax.plot(grid, accuracy, marker="o", label=f"{m} noise")
        ax.axhline(without[m], color=line.get_color(), linestyle="--", label=f"without {m}")
    ax.set(xlabel="noise scale", ylabel="accuracy", ylim=(0, 1.02), title=f"step {ctx.step}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    canvas.draw()
    picture = np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / 255.0
    if ctx.writer is not None:
        ctx.writer.write_image(ctx.step, "robustness", picture)
    else:
        path = ctx.workdir / "images" / "robustness.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
