"""Error against the number of labels (or the paired fraction): the few-labels sweep.

    rows = sweep_rows(select_methods(["mnist/fixmatch", "mnist/supervised"]),
                      num_labels=(100, 600, 1000, 3000))
    results = run_sweep(rows, seeds=(0,), data_paths={"mnist": "/data/mnist"},
                        workdir_root="runs/reproduce", out_dir="results")

A method is a config whose training set is partly labelled (`data.num_labels`) or partly
paired (`data.paired_fraction`); each sweep point is one crossjax.reproduce row whose
run overrides that field, trained per seed with scripts/train.py through the same
machinery (`reproduce.run_row`: the checkpoint chosen on validation, test read once at
the end). Results go to OUT/few_labels.json (a list of rows: `dataset`, `method`,
`num_labels` or `paired_fraction`, `test_error`, `validation_error`, `seeds`, `command`,
`wall_s`, ...), OUT/few_labels.md (with the published M2 and M1+M2 errors beside the
MNIST rows) and OUT/few_labels.png (test error against labels). A row already in the
json with status ok is skipped, and a run whose workdir finished is read, not retrained.
Every method has a `:tiny` twin (its config's tiny variant) for tests.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crossjax import reproduce
from crossjax.errors import ConfigError

log = logging.getLogger(__name__)

LABEL_COUNTS = (100, 600, 1000, 3000)
NUM_LABELS, PAIRED_FRACTION = "num_labels", "paired_fraction"
# Kingma et al. 2014, "Semi-supervised Learning with Deep Generative Models", table 1:
# MNIST test error (%) by number of labels.
PUBLISHED = {
    100: {"M2": 11.97, "M1+M2": 3.33},
    600: {"M2": 4.94, "M1+M2": 2.59},
    1000: {"M2": 3.60, "M1+M2": 2.40},
    3000: {"M2": 3.92, "M1+M2": 2.18},
}
# The targets for the best crossjax method on MNIST: test error at most this.
TARGETS = {100: 0.05, 600: 0.03, 1000: 0.025, 3000: 0.02}


@dataclasses.dataclass(frozen=True)
class Method:
    """A config trained at each sweep point. `sweeps`: the data field the sweep sets
    (num_labels or paired_fraction); `metric`: an accuracy-like eval metric (error =
    1 - metric); `data`: data flag -> config field, as in crossjax.reproduce.RowRun;
    `extra_metrics`: further test metrics recorded beside it; `judged`: meets the
    issue's MNIST targets (else its rows only report); `count_variants`: label counts
    the config has a variant for (`config:600`), which sets more than num_labels (M2's
    alpha), so the sweep runs that variant and takes no other count."""

    dataset: str
    name: str
    config: str
    data: Mapping[str, str]
    metric: str = "accuracy"
    sweeps: str = NUM_LABELS
    extra_metrics: tuple[str, ...] = ()
    judged: bool = False
    count_variants: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.name}"


HEADS = ("head_accuracy/image", "head_accuracy/audio")
MNIST, AV = reproduce.MNIST_SOURCE, reproduce.AV_SOURCES
METHODS: tuple[Method, ...] = (
    Method("mnist", "supervised", "configs/mnist_fixmatch.py:supervised", MNIST),
    Method("mnist", "fixmatch", "configs/mnist_fixmatch.py", MNIST, judged=True),
    Method("mnist", "m2", "configs/mnist_m2.py", MNIST, judged=True, count_variants=LABEL_COUNTS),
    Method("av_mnist", "image_supervised", "configs/av_mnist.py:image_labels", AV),
    Method("av_mnist", "audio_supervised", "configs/av_mnist.py:audio_labels", AV),
    Method("av_mnist", "image_fixmatch", "configs/av_mnist.py:image_fixmatch", AV),
    Method("av_mnist", "audio_fixmatch", "configs/av_mnist.py:audio_fixmatch", AV),
    Method("av_mnist", "cotrain", "configs/av_mnist.py:cotrain", AV, extra_metrics=HEADS),
    Method(
        "av_mnist", "mopoe", "configs/av_mnist.py:mopoe", AV, metric=reproduce.COHERENCE,
        sweeps=PAIRED_FRACTION,
    ),
    # Half of each batch complete examples and the experts aligned on them (the `weak`
    # flag's batch make-up applies below paired fraction 1; at 1 every example is).
    Method(
        "av_mnist", "mopoe_align", "configs/av_mnist.py:mopoe_weak_align", AV,
        metric=reproduce.COHERENCE, sweeps=PAIRED_FRACTION,
    ),
)  # fmt: skip


def all_methods() -> dict[str, Method]:
    """Every method by key ("mnist/fixmatch"), then each one's ":tiny" twin."""
    methods = {m.key: m for m in METHODS}
    for m in METHODS:
        tiny = dataclasses.replace(
            m, name=m.name + reproduce.TINY, config=reproduce.with_flag(m.config, "tiny")
        )
        methods[tiny.key] = tiny
    return methods


def select_methods(keys: Sequence[str] | None) -> list[Method]:
    """The methods named (None or empty: every MNIST method); ConfigError lists the valid."""
    methods = all_methods()
    if not keys:
        return [m for m in METHODS if m.dataset == "mnist"]
    unknown = [k for k in keys if k not in methods]
    if unknown:
        raise ConfigError(
            f"unknown few-labels method {unknown[0]!r}; valid: {', '.join(methods)} (comma-separated)"
        )
    return [methods[k] for k in dict.fromkeys(keys)]


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One point of the sweep: `method` with `field` (num_labels | paired_fraction) = value."""

    method: Method
    value: float

    @property
    def field(self) -> str:
        return self.method.sweeps

    def reproduce_row(self) -> reproduce.Row:
        m, value = self.method, self.value
        short = "labels" if self.field == NUM_LABELS else "paired"
        name = f"{m.dataset}_{m.name.replace(':', '_')}_{short}{value:g}"
        target = TARGETS.get(int(value)) if m.judged and self.field == NUM_LABELS else None
        config = m.config
        if m.count_variants and self.field == NUM_LABELS:
            config = reproduce.with_flag(config, str(int(value)))
        run = reproduce.RowRun(
            m.name, config, m.metric, overrides=(f"--config.data.{self.field}={value:g}",),
            data=m.data,
        )  # fmt: skip
        return reproduce.Row(
            name=name,
            published=_published(m, self.field, value),
            target=f"test error <= {target:.1%}" if target is not None else "report",
            runs=(run,),
            check=reproduce.at_least(1.0 - target) if target is not None else lambda _: True,
            extra_metrics=m.extra_metrics,
        )


def _published(method: Method, field: str, value: float) -> str:
    figures = PUBLISHED.get(int(value)) if field == NUM_LABELS else None
    if method.dataset != "mnist" or not figures:
        return "-"
    return ", ".join(f"{name} {error:.2f} %" for name, error in figures.items())


def sweep_rows(
    methods: Sequence[Method],
    num_labels: Sequence[int] = LABEL_COUNTS,
    paired_fractions: Sequence[float] = (),
) -> list[SweepRow]:
    """Every method at each of its sweep's values; ConfigError for a method whose sweep
    has no values or a value out of range."""
    for n in num_labels:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"num_labels {n!r}; valid: positive integers, e.g. 100,600")
    for f in paired_fractions:
        if not 0 < f <= 1:
            raise ConfigError(f"paired fraction {f!r}; valid: numbers in (0, 1], e.g. 0.1,1")
    rows = []
    for m in methods:
        values = num_labels if m.sweeps == NUM_LABELS else paired_fractions
        if not values:
            flag = "--num_labels" if m.sweeps == NUM_LABELS else "--paired_fractions"
            raise ConfigError(f"method {m.key!r} sweeps {m.sweeps}; give its values with {flag}")
        other = [v for v in values if m.count_variants and v not in m.count_variants]
        if m.sweeps == NUM_LABELS and other:
            raise ConfigError(
                f"method {m.key!r} has no variant for {other[0]} labels; valid: "
                f"{', '.join(map(str, m.count_variants))}"
            )
        rows += [SweepRow(m, v) for v in values]
    return rows


def _result(row: SweepRow, record: Mapping[str, Any]) -> dict[str, Any]:
    """The few_labels.json row of a crossjax.reproduce record."""
    m = row.method

    def error(key: str) -> float | None:
        value = record.get(key)
        return None if value is None else round(1.0 - value, 6)

    out = {
        **_point(row, record["seeds"]),
        "metric": m.metric,
        "test_error": error("test"),
        "test_error_spread": record.get("test_spread"),
        "validation_error": error("validation"),
        "command": record["command"],
        "wall_s": record["wall_s"],
        "status": record["status"],
        "target": record["target"],
        "met": record["met"] if record["target"] != "report" else None,
        "published": record["published"],
        "config": m.config,
    }
    for key in m.extra_metrics:
        out[f"test_{key}"] = record.get(f"test_{key}")
    if record["status"] != "ok":
        out["error"] = record.get("error")
    return out


def _point(row: SweepRow, seeds: Sequence[int]) -> dict[str, Any]:
    """What names a sweep point in the results: dataset, method, setting, seeds."""
    return {
        "dataset": row.method.dataset,
        "method": row.method.name,
        NUM_LABELS: int(row.value) if row.field == NUM_LABELS else None,
        PAIRED_FRACTION: row.value if row.field == PAIRED_FRACTION else None,
        "seeds": list(seeds),
    }


def _same_point(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    keys = ("dataset", "method", NUM_LABELS, PAIRED_FRACTION, "seeds")
    return all(a.get(k) == b.get(k) for k in keys)


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "few_labels.json"
    return json.loads(path.read_text()) if path.exists() else []


def run_sweep(
    rows: Sequence[SweepRow],
    seeds: Sequence[int],
    data_paths: Mapping[str, str],
    workdir_root: str | Path,
    out_dir: str | Path,
    echo: Callable[[str], None] = print,
    *,
    rerun: bool = False,
) -> list[dict[str, Any]]:
    """Trains each sweep point for every seed (skipping points the results already hold
    with status ok, unless `rerun`), writing the results after each; returns them all."""
    results = load_results(out_dir)
    for row in rows:
        probe = _point(row, seeds)
        done = [r for r in results if _same_point(r, probe) and r.get("status") == "ok"]
        if done and not rerun:
            echo(f"[{row.reproduce_row().name}] in the results already; skipped")
            continue
        record = reproduce.run_row(
            row.reproduce_row(), seeds, data_paths, workdir_root, echo, reuse=not rerun
        )
        results = [r for r in results if not _same_point(r, probe)] + [_result(row, record)]
        write_results(results, out_dir)
    return results


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _test_error(results: Sequence[Mapping[str, Any]], method: str, **point: Any) -> float | None:
    for r in results:
        if r["method"] == method and all(r.get(k) == v for k, v in point.items()):
            return r.get("test_error")
    return None


def comparisons(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The issue's relative targets, where the results hold both sides: co-training's
    averaged prediction above each modality's own FixMatch (av_mnist, per label count),
    and the multimodal VAE at paired fraction 0.1 within 0.05 coherence of 1.0."""
    lines = []
    av = [r for r in results if r["dataset"] == "av_mnist"]
    for n in sorted({r[NUM_LABELS] for r in av if r["method"] == "cotrain" and r.get(NUM_LABELS)}):
        ours = _test_error(av, "cotrain", num_labels=n)
        alone = {m: _test_error(av, f"{m}_fixmatch", num_labels=n) for m in ("image", "audio")}
        if ours is None or None in alone.values():
            continue
        met = "yes" if all(ours < e for e in alone.values()) else "no"
        lines.append(
            f"- av_mnist, {n} labels: co-training {_percent(ours)} against FixMatch on image "
            f"{_percent(alone['image'])}, on audio {_percent(alone['audio'])}; below both: {met}"
        )
    for method in sorted({r["method"] for r in av if r.get(PAIRED_FRACTION) is not None}):
        weak = _test_error(av, method, paired_fraction=0.1)
        full = _test_error(av, method, paired_fraction=1.0)
        if weak is not None and full is not None:
            met = "yes" if weak - full <= 0.05 else "no"
            lines.append(
                f"- av_mnist/{method}: coherence error {_percent(weak)} at paired fraction "
                f"0.1 against {_percent(full)} fully paired; within 0.05: {met}"
            )
    return lines


def results_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """The table: test and validation error per point, the published MNIST figures
    beside it, the target and whether it holds, the wall time; then the commands."""
    lines = [
        "# Few labels and unpaired data",
        "",
        "Written by `python scripts/few_labels.py` (crossjax/few_labels.py): test error of the",
        "checkpoint chosen on validation (error = 1 - the metric; for the multimodal VAE, 1 -",
        "audio -> image coherence), mean over seeds. Published: Kingma et al. 2014, table 1.",
        "",
        "| dataset | method | labels | paired | test error | validation error | published | "
        "target | met | seeds | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        test = _percent(r.get("test_error"))
        if len(r.get("seeds", [])) > 1 and r.get("test_error_spread") is not None:
            test += f" ± {100 * r['test_error_spread']:.2f}"
        heads = [k for k in r if k.startswith("test_head_accuracy/") and r[k] is not None]
        if heads:
            test += " (" + ", ".join(f"{k[19:]} head {_percent(1 - r[k])}" for k in heads) + ")"
        met = {True: "yes", False: "no", None: "-"}[r.get("met")]
        if r.get("status") not in ("ok", None):
            met = f"failed: {r.get('error', '')}"
        labels = "all" if r.get(NUM_LABELS) is None else str(r[NUM_LABELS])
        paired = "-" if r.get(PAIRED_FRACTION) is None else f"{r[PAIRED_FRACTION]:g}"
        lines.append(
            f"| {r['dataset']} | {r['method']} | {labels} | {paired} | {test} | "
            f"{_percent(r.get('validation_error'))} | {r.get('published', '-')} | "
            f"{r.get('target', '')} | {met} | {len(r.get('seeds', []))} | {r.get('wall_s') or '-'} |"
        )
    compared = comparisons(results)
    if compared:
        lines += ["", "Relative targets:", "", *compared]
    lines += ["", "Commands:", ""]
    for r in results:
        point = r.get(NUM_LABELS) or r.get(PAIRED_FRACTION)
        lines.append(f"- {r['dataset']}/{r['method']} at {point}: `{r['command']}`")
    return "\n".join(lines) + "\n"


def plot_curves(results: Sequence[Mapping[str, Any]], path: str | Path) -> bool:
    """Test error against the number of labels, a line per (dataset, method), with the
    published MNIST M2 and M1+M2 errors dashed; False (nothing written) without matplotlib
    or without a num_labels row."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed; %s not written", path)
        return False
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.get(NUM_LABELS) is not None and r.get("test_error") is not None:
            curves.setdefault(f"{r['dataset']}/{r['method']}", []).append(
                (r[NUM_LABELS], 100 * r["test_error"])
            )
    if not curves:
        return False
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, points in sorted(curves.items()):
        xs, ys = zip(*sorted(points), strict=True)
        axes.plot(xs, ys, marker="o", label=name)
    if any(name.startswith("mnist/") for name in curves):
        counts = sorted(PUBLISHED)
        for published in ("M2", "M1+M2"):
            errors = [PUBLISHED[n][published] for n in counts]
            axes.plot(counts, errors, linestyle="--", label=f"published {published} (MNIST)")
    axes.set_xscale("log")
    axes.set_xlabel("labelled training examples")
    axes.set_ylabel("test error (%)")
    axes.legend(fontsize=7)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def write_results(results: Sequence[Mapping[str, Any]], out_dir: str | Path) -> None:
    """OUT/few_labels.json, OUT/few_labels.md and (with matplotlib) OUT/few_labels.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "few_labels.json").write_text(json.dumps(list(results), indent=1) + "\n")
    (out / "few_labels.md").write_text(results_markdown(results))
    plot_curves(results, out / "few_labels.png")


def dry_run_commands(
    rows: Sequence[SweepRow],
    seeds: Sequence[int],
    data_paths: Mapping[str, str],
    workdir_root: str | Path,
) -> list[str]:
    """The training commands `run_sweep` would run, in order."""
    return reproduce.dry_run_commands(
        [r.reproduce_row() for r in rows], seeds, data_paths, workdir_root
    )
