"""First-step compile seconds of every config the README lists, on this machine:

    python benchmarks/compile_times.py --json results/compile_times.json \
        --markdown results/compile_times.md [--configs digits_fusion,digits_vae] \
        [--realdata /work/shared/realdata]

For each config, `crossjax.benchmark.compile_seconds`: the jitted init, train step and
eval step lowered from abstract shapes and compiled with the persistent compilation cache
off (a cold start; a second run of a config loads them from the cache instead). Configs
that read a downloaded dataset are measured on local copies where `--realdata` holds one
(MNIST idx files, FSDD recordings; Fashion-MNIST from /usr/share/datasets/fashion-mnist)
and marked "real data"; the others are listed as not measured, with what they need.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import write_json  # noqa: E402
from crossjax.benchmark import compile_seconds  # noqa: E402
from crossjax.config import load_config_file  # noqa: E402

SLOW_SECONDS = 5.0  # issue #16: a train step slower than this to compile needs a reason
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def readme_configs(readme: Path = ROOT / "README.md") -> list[str]:
    """Names of the config files the README mentions (`configs/NAME.py` or `NAME.py`)."""
    text = readme.read_text()
    names = set(re.findall(r"configs/(\w+)\.py", text)) | set(re.findall(r"\b(\w+)\.py\b", text))
    return sorted(n for n in names if n not in ("common", "__init__") and _config_path(n).exists())


def _config_path(name: str) -> Path:
    """configs/NAME.py of "NAME" or "NAME:variant"."""
    return ROOT / "configs" / f"{name.partition(':')[0]}.py"


def real_data_overrides(name: str, realdata: Path | None) -> dict[str, str] | None:
    """{config field: local folder} that points `name` at a local copy of its dataset;
    {} for configs that need none (the embedded datasets); None where no copy is known.
    `name` is a config file's name, with or without a ":variant"."""
    name = name.partition(":")[0]
    if name.startswith(("digits_", "shapes_")):
        return {}
    mnist = realdata / "mnist" if realdata else None
    fsdd = realdata / "fsdd" / "recordings" if realdata else None
    folders = {
        "mnist": {"data.source.path": mnist},
        "mnist_vae": {"data.source.path": mnist},
        "mnist_cnn": {"data.source.path": mnist},
        "mnist_m2": {"data.source.path": mnist},
        "mnist_fixmatch": {"data.source.path": mnist},
        "files_idx": {"data.source.path": mnist},
        "spoken_digit": {"data.source.path": fsdd},
        "av_mnist": {
            "data.pairing_sources.mnist": mnist,
            "data.pairing_sources.spoken_digit": fsdd,
        },
        "fashion_mnist": {"data.source.path": Path(FASHION_MNIST)},
    }.get(name)
    if folders is None or not all(p is not None and p.exists() for p in folders.values()):
        return None
    return {k: str(v) for k, v in folders.items()}


def _set(config, dotted: str, value: str) -> None:
    *path, last = dotted.split(".")
    section = config
    for part in path:
        section = section[part]
    section[last] = value


def measure(name: str, workdir: Path, realdata: Path | None) -> dict:
    """One row: the config's compile seconds, or `skipped` saying why not."""
    overrides = real_data_overrides(name, realdata)
    row: dict = {"config": name, "real_data": bool(overrides)}
    if overrides is None:
        row["skipped"] = "needs its downloaded dataset (no local copy here)"
        return row
    start = time.perf_counter()
    try:
        variant = name.partition(":")[2]
        config = load_config_file(f"{_config_path(name)}{':' + variant if variant else ''}")
        for field, value in overrides.items():
            _set(config, field, value)
        row.update(compile_seconds(config, workdir / name))
    except Exception as e:  # noqa: BLE001 - one config's failure is a row, not the end
        row["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        traceback.print_exc()
    row["wall_s"] = time.perf_counter() - start
    return row


def table(rows: list[dict]) -> str:
    """A markdown table of `rows` (wall-clock seconds, and the train step's CPU seconds),
    the train steps over SLOW_SECONDS in bold."""
    lines = [
        "| config | data | init s | train step s | eval step s | train step CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        data = "real data (local copy)" if r["real_data"] else "embedded"
        if "skipped" in r:
            lines.append(f"| {r['config']} | - | not measured: {r['skipped']} | | | |")
            continue
        train = f"{r['train_step']:.2f}"
        if r["train_step"] > SLOW_SECONDS:
            train = f"**{train}**"
        lines.append(
            f"| {r['config']} | {data} | {r['init']:.2f} | {train} | {r['eval_step']:.2f} "
            f"| {r.get('train_step_cpu', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", default="", help="comma-separated NAME[:variant]; default: README's"
    )
    parser.add_argument("--realdata", default="", help="folder with mnist/ and fsdd/ copies")
    parser.add_argument("--json", default="", help="write the rows to this JSON file")
    parser.add_argument("--markdown", default="", help="write the table to this file")
    parser.add_argument("--workdir", default="", help="for vocabularies (default: a temp dir)")
    args = parser.parse_args(argv)
    names = [n for n in args.configs.split(",") if n] or readme_configs()
    realdata = Path(args.realdata) if args.realdata else None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="crossjax-compile-times-"))
    rows = []
    for name in names:
        rows.append(measure(name, workdir, realdata))
        print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    markdown = table(rows)
    print(markdown)
    if args.json:
        write_json(args.json, {"load_average": load, "rows": rows})
    if args.markdown:
        Path(args.markdown).write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
