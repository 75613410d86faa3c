"""crossjax's benchmark suite in one run, for measuring a new machine (a GPU, say):

    python benchmarks/suite.py --json results/suite_<machine>.json [--steps 50] [--tiny]

Runs `crossjax.benchmark.benchmark` (the figures of scripts/benchmark.py: compile time,
step time median and p90, examples/s, XLA's FLOPs per step, MFU against a measured
matmul peak in the run's dtype, peak device memory) on each entry of SUITE and prints
one markdown table. The transformer two tower in bf16 is the MFU benchmark. Entries
marked synthetic feed device-resident random batches. --tiny runs the configs' tiny
variants: a smoke test whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import write_json  # noqa: E402
from crossjax.benchmark import benchmark  # noqa: E402
from crossjax.config import load_config_file  # noqa: E402

# (config file, variant flags, synthetic input)
SUITE = (
    ("digits_fusion", "", False),  # the demo on its device-cached data: input pipeline too
    ("digits_vae", "", True),  # MLP VAE
    ("shapes_clip", "", True),  # CNN + bag-of-words two tower
    ("shapes_clip", "transformer", True),  # ViT + transformer two tower, bf16
)


def run_suite(entries=SUITE, *, steps: int = 50, tiny: bool = False, workdir=None) -> list:
    """One dict of figures per entry, with its `config` ("name[:variant]")."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="crossjax-suite-"))
    rows = []
    for name, variant, synthetic in entries:
        variant = "_".join(v for v in (variant, "tiny" if tiny else "") if v)
        spec = f"{name}:{variant}" if variant else name
        print(f"benchmarking {spec} ...", flush=True)
        config = load_config_file(f"{ROOT / 'configs' / name}.py:{variant}")
        figures = benchmark(
            config, workdir / spec.replace(":", "_"), steps=steps, synthetic=synthetic
        )
        rows.append({"config": spec, **figures})
    return rows


def table(rows: list) -> str:
    """The figures as a markdown table."""
    lines = [
        "| config | device | batch | step ms (median / p90) | examples/s | GFLOP/step | MFU "
        "| peak TFLOP/s | compile s | peak memory GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        memory = r["peak_memory_bytes"]
        memory = "-" if math.isnan(memory) else f"{memory / 2**30:.2f}"
        lines.append(
            f"| `{r['config']}` | {r['devices']} x {r['backend']} | {r['batch_size']} "
            f"| {r['step_ms_median']:.2f} / {r['step_ms_p90']:.2f} | {r['examples_per_s']:,.0f} "
            f"| {r['flops_per_step'] / 1e9:.2f} | {r['mfu']:.3f} "
            f"| {r['peak_flops'] / 1e12:.1f} ({r['peak_flops_source']}) "
            f"| {r['compile_s']:.1f} | {memory} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per entry")
    parser.add_argument("--tiny", action="store_true", help="tiny variants (smoke test)")
    parser.add_argument("--workdir", help="for the datasets' vocabularies (default: a temp dir)")
    args = parser.parse_args()
    rows = run_suite(steps=args.steps, tiny=args.tiny, workdir=args.workdir)
    print(table(rows))
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
