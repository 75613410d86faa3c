"""Reproductions of published figures: named rows, each the exact training commands a user
can paste, run for several seeds, their figures read back from the runs' records.

    rows = select_rows(["mnist_cnn", "mnist_vae"])
    results = run_rows(rows, seeds=(0,), data_paths={"mnist": "/data/mnist"},
                       workdir_root="runs/reproduce")
    write_results(results, "results")  # merges into results/reproductions.{json,md}

A row trains one or more runs (`RowRun`: a config file and `--config.*` overrides) per
seed with `scripts/train.py` in a subprocess, reads each run's validation and test
figures from its `metrics.jsonl` (the checkpoint chosen on validation by the config's
`best_metric`; when that is not the final one, its test figure comes from
`scripts/evaluate.py --checkpoint best`), and judges the row's target with its `check`.
A failed run marks its row failed (with the log path); the other rows still run.
Every row has a `:tiny` twin (the configs' tiny variants: a few steps) for tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crossjax.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ":tiny"
JUDGES_DIR = "coherence"  # judges live in <workdir_root>/coherence/<name> (see RowRun.judge)


@dataclasses.dataclass(frozen=True)
class RowRun:
    """One training run of a row. `config`: "configs/x.py[:variant]"; `data`: data flag
    (`mnist`, `fashion_mnist`, `fsdd`) -> the config field its path goes to;
    `judge`: after seed 0 succeeds, the run is also `<workdir_root>/coherence/<judge>`,
    where the coherence evaluators of later rows find it."""

    label: str
    config: str
    metric: str
    overrides: tuple[str, ...] = ()
    data: Mapping[str, str] = dataclasses.field(default_factory=dict)
    judge: str = ""


# check(figures) -> met, where figures[label] is that run's mean test metric.
Check = Callable[[Mapping[str, float]], bool]


@dataclasses.dataclass(frozen=True)
class Row:
    """A reproduction: `runs[0]` is the row's own figure, the others are compared with it
    by `check` (e.g. a fused classifier against each modality alone)."""

    name: str
    published: str
    target: str
    runs: tuple[RowRun, ...]
    check: Check
    extra_metrics: tuple[str, ...] = ()  # reported beside the metric (e.g. iwae_nll)


def at_least(value: float) -> Check:
    return lambda figures: next(iter(figures.values())) >= value


def at_most(value: float) -> Check:
    return lambda figures: next(iter(figures.values())) <= value


def above_others(figures: Mapping[str, float]) -> bool:
    """The first run's figure beats every other run's."""
    first, *others = figures.values()
    return all(first > other for other in others)


def at_least_with_drop(value: float, drop: float) -> Check:
    """The first figure >= value and the second (e.g. trained with missing modalities)
    at most `drop` below it."""

    def check(figures: Mapping[str, float]) -> bool:
        full, partial = list(figures.values())[:2]
        return full >= value and full - partial <= drop

    return check


MNIST_SOURCE = {"mnist": "data.source.path"}
AV_SOURCES = {"mnist": "data.pairing_sources.mnist", "fsdd": "data.pairing_sources.spoken_digit"}
COHERENCE = "coherence/audio_to_image"

ROWS: tuple[Row, ...] = (
    Row(
        "mnist_cnn",
        "99.17 % (flax examples)",
        "test accuracy >= 0.991",
        (RowRun("cnn", "configs/mnist_cnn.py", "accuracy", data=MNIST_SOURCE, judge="mnist_cnn"),),
        at_least(0.991),
    ),
    Row(
        "mnist_vae",
        "~104-106 nats (pytorch/examples vae)",
        "test neg ELBO <= 106 nats; IWAE (K=64) beside it",
        (RowRun("vae", "configs/mnist_vae.py", "neg_elbo", data=MNIST_SOURCE),),
        at_most(106.0),
        extra_metrics=("iwae_nll",),
    ),
    Row(
        "fashion_mnist_cnn",
        "0.90-0.93 (zalandoresearch benchmark)",
        "test accuracy >= 0.91",
        (
            RowRun(
                "cnn",
                "configs/mnist_cnn.py:fashion",
                "accuracy",
                data={"fashion_mnist": "data.source.path"},
            ),
        ),
        at_least(0.91),
    ),
    Row(
        "fashion_mnist_resnet18",
        "0.93-0.95 (ResNet-18, zalandoresearch benchmark)",
        "test accuracy >= 0.93 (ResNet-18 from scratch, BatchNorm statistics in the state)",
        (
            RowRun(
                "resnet18",
                "configs/fashion_mnist.py:resnet18",
                "accuracy",
                data={"fashion_mnist": "data.source.path"},
            ),
        ),
        at_least(0.93),
    ),
    Row(
        "fsdd_audio",
        "~0.97-0.99 (spectrogram CNNs, official split)",
        "test accuracy >= 0.97 (takes 0-4 of every speaker and digit)",
        (
            RowRun(
                "audio", "configs/spoken_digit.py", "accuracy", data={"fsdd": "data.source.path"}
            ),
        ),
        at_least(0.97),
    ),
    Row(
        "av_digits_fusion",
        "-",
        "fused image + audio test accuracy above each modality alone",
        tuple(
            RowRun(label, f"configs/av_mnist.py:{label}", "accuracy", data=AV_SOURCES)
            for label in ("av", "image", "audio")
        ),
        above_others,
    ),
    *(
        Row(
            f"av_digits_{model}",
            "MMVAE on MNIST-SVHN: 0.86 / 0.69 (Shi et al. 2019)",
            "coherence audio->image >= 0.90 (MNIST CNN judge); drop <= 0.03 with 50% missing",
            (
                RowRun("full", f"configs/av_mnist.py:{model}", COHERENCE, data=AV_SOURCES),
                RowRun(
                    "missing", f"configs/av_mnist.py:{model}_missing", COHERENCE, data=AV_SOURCES
                ),
            ),
            at_least_with_drop(0.90, 0.03),
        )
        for model in ("mvae", "mopoe", "mmvae")
    ),
)


def with_flag(config: str, flag: str) -> str:
    """ "configs/x.py" -> "configs/x.py:flag"; "configs/x.py:a" -> "configs/x.py:a_flag"."""
    path, _, variant = config.partition(":")
    return f"{path}:{variant}_{flag}" if variant else f"{path}:{flag}"


def tiny_row(row: Row) -> Row:
    """The row on the configs' tiny variants (a few steps): for tests, never for figures."""
    runs = tuple(
        dataclasses.replace(
            r, config=with_flag(r.config, "tiny"), judge=r.judge and f"{r.judge}_tiny"
        )
        for r in row.runs
    )
    return dataclasses.replace(row, name=row.name + TINY, runs=runs)


def all_rows() -> dict[str, Row]:
    """Every row by name, judges first, then each row's `:tiny` twin."""
    rows = {row.name: row for row in ROWS}
    rows.update({row.name + TINY: tiny_row(row) for row in ROWS})
    return rows


def select_rows(names: Sequence[str] | None) -> list[Row]:
    """The rows named (None or empty: every full row), in registry order, so judges run
    before the rows they judge. ConfigError names the valid rows."""
    rows = all_rows()
    if not names:
        return list(ROWS)
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise ConfigError(
            f"unknown reproduction row {unknown[0]!r}; valid: {', '.join(rows)} (comma-separated)"
        )
    order = list(rows)
    return [rows[n] for n in sorted(set(names), key=order.index)]


def run_workdir(root: Path, row: Row, run: RowRun, seed: int) -> Path:
    """<root>/<row>[_<label>]_seed<S>: flat, so a relative coherence judge
    ("coherence/<name>") resolves to <root>/coherence/<name> for every row."""
    label = "" if len(row.runs) == 1 else f"_{run.label}"
    return root / f"{row.name.replace(':', '_')}{label}_seed{seed}"


def train_command(
    run: RowRun, workdir: Path, seed: int, data_paths: Mapping[str, str]
) -> list[str]:
    """The scripts/train.py command line (argv without the interpreter)."""
    args = ["scripts/train.py", f"--config={run.config}", f"--workdir={workdir}"]
    args.append(f"--config.seed={seed}")
    for flag, field in run.data.items():
        if data_paths.get(flag):
            args.append(f"--config.{field}={data_paths[flag]}")
    return [*args, *run.overrides]


def read_records(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chosen_figures(workdir: Path, log_path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(validation, test) metrics of the checkpoint chosen on validation: the best record
    by the saved config's best_metric (the final one when it has none). A test figure of
    a non-final checkpoint is measured with scripts/evaluate.py --checkpoint best."""
    records = read_records(workdir)
    validation = [r for r in records if r.get("split") == "validation"]
    tests = [r for r in records if r.get("split") == "test"]
    if not validation or not tests:
        raise RuntimeError(f"{workdir}/metrics.jsonl has no final validation and test records")
    config = json.loads((workdir / "config.json").read_text())
    metric, mode = config.get("best_metric", ""), config.get("best_mode", "max")
    final = validation[-1]
    best = final
    if metric and all(metric in r for r in validation):
        pick = max if mode == "max" else min
        best = pick(reversed(validation), key=lambda r: r[metric])  # ties: the latest
    if best["step"] == final["step"]:
        return best, tests[-1]
    argv = ["scripts/evaluate.py", f"--workdir={workdir}", "--checkpoint=best", "--split=test"]
    output = _run_logged(argv, log_path)
    return best, json.loads(output.strip().splitlines()[-1])


def finished(workdir: Path) -> bool:
    """True when `workdir` holds a run that ended: its config and a final validation and
    test record in metrics.jsonl."""
    try:
        splits = {r.get("split") for r in read_records(workdir)}
    except (OSError, ValueError):
        return False
    return (workdir / "config.json").exists() and {"validation", "test"} <= splits


TRAIN_WALL_FILE = "reproduce_wall_s.json"


def _save_train_wall(workdir: Path, seconds: float) -> None:
    """Records the wall time of the command that trained `workdir`, for reuse."""
    if workdir.is_dir():
        (workdir / TRAIN_WALL_FILE).write_text(json.dumps({"wall_s": round(seconds, 1)}))


def _train_wall(workdir: Path) -> float | None:
    """The recorded training wall time of `workdir` (s); None when it was not recorded."""
    try:
        return float(json.loads((workdir / TRAIN_WALL_FILE).read_text())["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_logged(argv: list[str], log_path: Path) -> str:
    """Runs `python argv` from the repository root, appending its output to `log_path`;
    RuntimeError naming the log when it fails. Returns its stdout."""
    with open(log_path, "a") as log:
        log.write(f"$ python {shlex.join(argv)}\n")
        log.flush()
        done = subprocess.run(
            [sys.executable, *argv], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        )
        log.write(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"exit code {done.returncode}; see {log_path}")
    return done.stdout


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, population standard deviation) of `values`."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def run_row(
    row: Row,
    seeds: Sequence[int],
    data_paths: Mapping[str, str],
    workdir_root: str | Path,
    echo: Callable[[str], None] = print,
    *,
    reuse: bool = False,
) -> dict[str, Any]:
    """Trains every run of `row` for every seed and returns its results record. With
    `reuse`, a run whose workdir already holds its final validation and test records is
    read, not trained again (a sweep resumed after a stop)."""
    root = Path(workdir_root).resolve()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "name": row.name, "published": row.published, "target": row.target,
        "metric": row.runs[0].metric, "seeds": list(seeds), "status": "ok",
    }  # fmt: skip
    commands, per_run, train_walls = [], {}, []
    try:
        for run in row.runs:
            figures: dict[str, list[float]] = {"test": [], "validation": []}
            figures.update({f"test_{m}": [] for m in row.extra_metrics})
            for seed in seeds:
                workdir = run_workdir(root, row, run, seed)
                log_path = root / "logs" / f"{workdir.name}.log"
                argv = train_command(run, _from_repo(workdir), seed, data_paths)
                commands.append("python " + shlex.join(argv))
                echo(f"[{row.name}] {run.label} seed {seed}: {commands[-1]}")
                record["log"] = str(log_path)
                if reuse and finished(workdir):
                    echo(
                        f"[{row.name}] {run.label} seed {seed}: finished before, reading {workdir}"
                    )
                else:
                    shutil.rmtree(workdir, ignore_errors=True)  # a rerun starts afresh
                    log_path.unlink(missing_ok=True)
                    began = time.monotonic()
                    _run_logged(argv, log_path)
                    _save_train_wall(workdir, time.monotonic() - began)
                train_walls.append(_train_wall(workdir))
                validation, test = chosen_figures(workdir, log_path)
                figures["validation"].append(float(validation[run.metric]))
                figures["test"].append(float(test[run.metric]))
                for m in row.extra_metrics:
                    figures[f"test_{m}"].append(float(test[m]))
                echo(
                    f"[{row.name}] {run.label} seed {seed}: test {run.metric} {test[run.metric]:.4f}"
                )
                if run.judge and seed == seeds[0]:
                    _link_judge(root, run.judge, workdir)
            per_run[run.label] = {k: mean_spread(v) for k, v in figures.items()}
        record.pop("log", None)
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
        echo(f"[{row.name}] FAILED: {e}")
    record["command"] = " && ".join(dict.fromkeys(commands))
    # The training commands' wall time, read back for reused runs; None when a reused
    # run predates the record (its time is unknown, not the few seconds of reading it).
    known = None not in train_walls
    record["wall_s"] = round(sum(train_walls), 1) if known and train_walls else None
    if record["status"] == "ok":
        first = per_run[row.runs[0].label]
        record["test"], record["test_spread"] = first["test"]
        record["validation"], record["validation_spread"] = first["validation"]
        for m in row.extra_metrics:
            record[f"test_{m}"], record[f"test_{m}_spread"] = first[f"test_{m}"]
        if len(row.runs) > 1:
            record["compared"] = {label: figs["test"][0] for label, figs in per_run.items()}
        record["met"] = bool(row.check({label: figs["test"][0] for label, figs in per_run.items()}))
    else:
        record.update(test=None, validation=None, met=False)
    return record


def _from_repo(path: Path) -> Path:
    """`path` relative to the repository root (where the commands run) when inside it,
    so recorded commands read as a user types them; else unchanged."""
    try:
        return path.relative_to(REPO_ROOT)
    except ValueError:
        return path


def _link_judge(root: Path, name: str, workdir: Path) -> None:
    link = root / JUDGES_DIR / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(workdir, target_is_directory=True)


def run_rows(
    rows: Sequence[Row],
    seeds: Sequence[int],
    data_paths: Mapping[str, str],
    workdir_root: str | Path,
    echo: Callable[[str], None] = print,
    *,
    reuse: bool = False,
) -> list[dict[str, Any]]:
    """`run_row` for each row in order; a failed row does not stop the others."""
    return [run_row(row, seeds, data_paths, workdir_root, echo, reuse=reuse) for row in rows]


def dry_run_commands(
    rows: Sequence[Row],
    seeds: Sequence[int],
    data_paths: Mapping[str, str],
    workdir_root: str | Path,
) -> list[str]:
    """The training commands `run_rows` would run, in order."""
    root = Path(workdir_root)
    return [
        "python "
        + shlex.join(train_command(run, run_workdir(root, row, run, seed), seed, data_paths))
        for row in rows
        for run in row.runs
        for seed in seeds
    ]


def merge_results(old: Sequence[dict], new: Sequence[dict]) -> list[dict]:
    """`old` rows with those of the same name replaced by `new`; new names appended,
    everything in registry order (unknown names last)."""
    merged = {r["name"]: r for r in old}
    merged.update({r["name"]: r for r in new})
    order = list(all_rows())
    rank = {name: i for i, name in enumerate(order)}
    return sorted(merged.values(), key=lambda r: rank.get(r["name"], len(order)))


def _figure(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        return "-"
    spread = record.get(f"{key}_spread", 0.0) or 0.0
    return f"{value:.4f} ± {spread:.4f}" if len(record.get("seeds", [])) > 1 else f"{value:.4f}"


def results_markdown(results: Sequence[dict]) -> str:
    """The reproductions table: test and validation figures as mean ± standard deviation
    over seeds, whether the target holds, the wall time and the command."""
    lines = [
        "# Reproductions",
        "",
        "Written by `python scripts/reproduce.py` (crossjax/reproduce.py): test figures of the",
        "checkpoint chosen on validation, mean ± standard deviation over seeds.",
        "",
        "| row | published | target | metric | test | validation | seeds | met | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        test = _figure(r, "test")
        extras = [k for k in r if k.startswith("test_") and not k.endswith("_spread")]
        test += "".join(f"; {k[5:]} {_figure(r, k)}" for k in extras if k != "test_spread")
        if r.get("compared"):
            test += "; " + ", ".join(f"{k} {v:.4f}" for k, v in r["compared"].items())
        met = {True: "yes", False: "no"}[bool(r.get("met"))]
        if r.get("status") == "failed":
            met = f"failed (log: {r.get('log', '-')})"
        lines.append(
            f"| {r['name']} | {r['published']} | {r['target']} | {r.get('metric', '')} | {test} "
            f"| {_figure(r, 'validation')} | {len(r.get('seeds', []))} | {met} | {r.get('wall_s') or '-'} |"
        )
    lines += ["", "Commands:", ""]
    lines += [f"- {r['name']}: `{r['command']}`" for r in results if r.get("command")]
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[dict], out_dir: str | Path) -> list[dict]:
    """Merges `results` into out_dir/reproductions.json and rewrites reproductions.md;
    returns the merged rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "reproductions.json"
    old = json.loads(path.read_text()) if path.exists() else []
    merged = merge_results(old, results)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    (out / "reproductions.md").write_text(results_markdown(merged))
    return merged
