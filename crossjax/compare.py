"""Train several fusion methods and compare them in one Markdown table and one plot.

`scripts/compare.py` is the command line; `compare(configs, out_dir)` does the work.
The methods are the fusion registry's (`methods()`), each trained from its variant of
configs/digits_fusion.py (`method_config`, e.g. `digits_fusion.py:film`). Each method is
trained by `crossjax.train.train_and_evaluate` in OUT/<method> (a method
whose workdir already holds the final test record is not retrained), its train step is
timed, and OUT/README.md (the table), OUT/robustness.png (accuracy vs noise scale per
method, one panel per modality) and OUT/results.json (every number) are written; an
OUT/.gitignore keeps the method workdirs out of git.

Step time is measured, not read from the training log: the median wall time of
`timing_steps` calls of the jitted train step on one device-resident batch, each ended
by `block_until_ready`, after warm-up (so compilation and the input pipeline are
excluded). The training loop's own steps/s (input pipeline included) goes to
results.json as `loop_steps_per_s`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import ml_collections

from crossjax import sharding
from crossjax.config import load_config_file
from crossjax.data.pipeline import DataPipeline
from crossjax.errors import ConfigError
from crossjax.models.fusion_methods import FUSIONS

log = logging.getLogger(__name__)

FUSION_CONFIG = "digits_fusion.py"  # the config file whose variants are the methods
MODALITIES = ("image", "text", "audio")
_WARMUP_STEPS = 3


@dataclasses.dataclass
class MethodResult:
    """What the table shows for one method (metrics: the final test record;
    validation_metrics: the final validation record, on which methods are chosen)."""

    method: str
    metrics: dict[str, float]
    num_params: int
    step_ms: float
    loop_steps_per_s: float | None
    curves: dict | None  # the run's robustness.json, when it has one
    validation_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def methods() -> list[str]:
    """Every registered fusion method (crossjax.models.fusion_methods.FUSIONS), sorted."""
    return FUSIONS.names()


def config_spec(method: str, variant: str | None = None, config_dir: str | Path = "configs") -> str:
    """The `--config` value that trains `method`: "configs/digits_fusion.py:<method>[_<variant>]"."""
    return f"{Path(config_dir) / FUSION_CONFIG}:{method}" + (f"_{variant}" if variant else "")


def method_config(
    method: str, variant: str | None = None, config_dir: str | Path = "configs"
) -> ml_collections.ConfigDict:
    """The config of `method` (variant flags such as "tiny" joined on); ConfigError for an
    unknown method or variant."""
    if method not in FUSIONS:
        raise ConfigError(f"unknown fusion method {method!r}; valid: {', '.join(methods())}")
    return load_config_file(config_spec(method, variant, config_dir))


def prepare_config(
    config: ml_collections.ConfigDict, steps: int | None
) -> ml_collections.ConfigDict:
    """A copy that trains `steps` steps, evaluates only at the end (the table reports the
    final model) and runs the robustness evaluator."""
    config = ml_collections.ConfigDict(config.to_dict())
    if steps:
        config.num_train_steps = steps
        config.checkpoint_every = min(config.checkpoint_every, steps)
    config.eval_every = 0
    if not any(e == "robustness" or e[0] == "robustness" for e in config.evaluators):
        config.evaluators = (*config.evaluators, "robustness")
    return config


def final_record(workdir: Path, num_steps: int, split: str = "test") -> dict | None:
    """The `split` record of step `num_steps` in workdir/metrics.jsonl, if the run got there."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    found = None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == split and record.get("step") == num_steps:
            found = record
    return found


def _loop_steps_per_s(workdir: Path) -> float | None:
    """Median steps/s of the training log, without the first interval (compilation)."""
    rates = [
        r["steps_per_s"]
        for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
        if r.get("split") == "train" and r.get("steps_per_s")
    ]
    return statistics.median(rates[1:] or rates) if rates else None


def time_train_step(
    config: ml_collections.ConfigDict, workdir: Path, num_steps: int
) -> tuple[int, float]:
    """(parameter count, median ms of one jitted train step) on a fresh state."""
    from crossjax.train import Experiment  # imported here: train imports the whole stack

    mesh = sharding.make_mesh(config.get("num_devices", 0) or None)
    data = DataPipeline(
        config.data,
        batch_size=config.batch_size,
        seed=config.seed,
        vocab_path=workdir / "vocab.json",
    )
    exp = Experiment(config, data, mesh)
    state, acc = exp.init(), exp.empty_train_metrics()
    batch = sharding.to_global(next(data.train_iterator()), mesh)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    times = []
    for i in range(_WARMUP_STEPS + num_steps):
        start = time.perf_counter()
        state, acc = exp.train_step(state, batch, acc)
        jax.block_until_ready((state, acc))
        if i >= _WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return int(num_params), 1000.0 * statistics.median(times)


def run_method(
    method: str, config: ml_collections.ConfigDict, workdir: Path, timing_steps: int
) -> MethodResult:
    """Trains (unless finished) and times one method in `workdir`."""
    from crossjax.train import train_and_evaluate

    record = final_record(workdir, config.num_train_steps)
    if record is None:
        log.info("Training %s in %s", method, workdir)
        train_and_evaluate(config, str(workdir))
        record = final_record(workdir, config.num_train_steps)
        if record is None:
            raise RuntimeError(f"{method}: training in {workdir} ended without a final eval")
    else:
        log.info("%s already trained in %s; reusing it", method, workdir)
    timing_path = workdir / "timing.json"
    if timing_path.exists():
        timing = json.loads(timing_path.read_text())
    else:
        num_params, step_ms = time_train_step(config, workdir, timing_steps)
        timing = {
            "num_params": num_params,
            "step_ms": step_ms,
            "timing_steps": timing_steps,
            "device": jax.devices()[0].device_kind,
            "num_devices": len(jax.devices()),
        }
        timing_path.write_text(json.dumps(timing, indent=2))
    curves_path = workdir / "robustness.json"
    metrics = {k: v for k, v in record.items() if k not in ("step", "split")}
    validation = final_record(workdir, config.num_train_steps, "validation") or {}
    return MethodResult(
        method=method,
        metrics=metrics,
        num_params=timing["num_params"],
        step_ms=timing["step_ms"],
        loop_steps_per_s=_loop_steps_per_s(workdir),
        curves=json.loads(curves_path.read_text()) if curves_path.exists() else None,
        validation_metrics={k: v for k, v in validation.items() if k not in ("step", "split")},
    )


def compare(
    configs: Mapping[str, ml_collections.ConfigDict],
    out_dir: str | Path,
    *,
    steps: int | None = None,
    timing_steps: int = 50,
    command: str = "",
) -> list[MethodResult]:
    """Trains every {method: config} in out_dir/<method> and writes the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The report is worth committing; the method workdirs (checkpoints) are not.
    (out / ".gitignore").write_text("# method workdirs: rerun scripts/compare.py\n*/\n")
    results = [
        run_method(method, prepare_config(config, steps), out / method, timing_steps)
        for method, config in configs.items()
    ]
    first = next(iter(configs.values()))
    write_report(
        results,
        out,
        command=command,
        steps=steps or first.num_train_steps,
        timing_steps=timing_steps,
        dataset=first.data.name,
    )
    return results


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(results: Sequence[MethodResult]) -> str:
    """One row per method: accuracy, F1, size, speed, robustness."""
    header = ["method", "validation acc", "test acc", "macro-F1", "params", "step ms"]
    header += [f"AUC {m}" for m in MODALITIES] + [f"acc w/o {m}" for m in MODALITIES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        m = r.metrics
        row = [
            f"`{r.method}`",
            _fmt(r.validation_metrics.get("accuracy")),
            _fmt(m.get("accuracy")),
            _fmt(m.get("macro_f1")),
            f"{r.num_params:,}",
            f"{r.step_ms:.2f}",
        ]
        row += [_fmt(m.get(f"robustness/{x}_auc")) for x in MODALITIES]
        row += [_fmt(m.get(f"robustness/without_{x}")) for x in MODALITIES]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_report(
    results: Sequence[MethodResult],
    out: Path,
    *,
    command: str,
    steps: int,
    timing_steps: int,
    dataset: str,
) -> tuple[Path, Path | None]:
    """OUT/README.md, OUT/results.json and (with matplotlib) OUT/robustness.png."""
    devices = jax.devices()
    device = f"{len(devices)} x {devices[0].device_kind}"
    plot = plot_robustness(results, out / "robustness.png")
    text = [
        f"# Fusion methods on `{dataset}`",
        "",
        f"Made by `{command or 'scripts/compare.py'}`: every method trained for {steps} "
        "steps from its config (`configs/digits_fusion.py:<method>`), then evaluated on the "
        "validation split (a seeded hold-out of train, on which to choose) and once on the "
        "test split.",
        "",
        markdown_table(results),
        "",
        f"- **step ms**: median wall time of {timing_steps} jitted train steps on one "
        f"device-resident batch after {_WARMUP_STEPS} warm-up steps, each ended by "
        f"`block_until_ready` ({device}; on a shared CPU these vary with load).",
        "- **AUC m**: area under test accuracy vs noise scale on modality m (scales "
        "0..max; image/audio: Gaussian noise of std scale x the modality's std; text: "
        "each word replaced by a random one with probability scale / max), divided by "
        "max scale x clean accuracy; 1.0 means the noise never hurt.",
        "- **acc w/o m**: test accuracy with modality m marked absent in every example.",
    ]
    if plot is not None:
        text += ["", "![accuracy vs noise scale](robustness.png)"]
    readme = out / "README.md"
    readme.write_text("\n".join(text) + "\n")
    (out / "results.json").write_text(
        json.dumps([dataclasses.asdict(r) for r in results], indent=2)
    )
    return readme, plot


def plot_robustness(results: Sequence[MethodResult], path: Path) -> Path | None:
    """Accuracy vs noise scale, one panel per modality, one line per method."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed; no plot written")
        return None
    with_curves = [r for r in results if r.curves]
    modalities = [
        m for m in MODALITIES if any(m in r.curves["noise_accuracy"] for r in with_curves)
    ]
    if not modalities:
        return None
    fig = Figure(figsize=(4.2 * len(modalities), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(modalities), squeeze=False, sharey=True)[0]
    for ax, modality in zip(axes, modalities, strict=True):
        for r in with_curves:
            curve = r.curves["noise_accuracy"].get(modality)
            if curve is not None:
                ax.plot(r.curves["scales"], curve, marker="o", markersize=3, label=r.method)
        ax.set(title=f"{modality} noise", xlabel="noise scale")
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path
