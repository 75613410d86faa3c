"""Which XLA:CPU reduction setting is faster on this CPU: crossjax's train steps with
XLA's YNNPACK reduction fusions on (XLA's default) and off.

    python benchmarks/xla_cpu_tuning.py [--models vae cnn two_tower captioner] [--rounds 3]
        [--json results/xla_cpu_tuning.json]

crossjax turns them off at import on AMD CPUs only (`crossjax/__init__.py`,
`CROSSJAX_XLA_CPU_TUNING`), because the two measured CPUs disagree: on AMD EPYC they made
a small step's sums slow, on Intel Xeon with AVX-512 XLA's own reduction loops are the slow
ones. The setting is read once per process, so each one runs in its own child process
(`CROSSJAX_XLA_CPU_TUNING=0`: XLA's default, `=off`), alternating the two over `--rounds`
rounds so that drift in the machine's load affects both. Each child times the real jitted
train step of benchmarks/compare_torch.py's models (no PyTorch needed). Prints one line per
model and one JSON object: the CPU, per model the median steps/s of each setting and
`off_over_on`, their geometric mean, the faster setting and what "auto" picks here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vae", "cnn", "two_tower", "captioner")
SETTINGS = {"ynn_reduce_on": "0", "ynn_reduce_off": "off"}


def child(models: list[str], seconds: float) -> dict:
    """Steps/s of each model's crossjax train step in this process (two rounds of about
    `seconds`, the better one: a child runs once per round of the parent)."""
    from benchmarks.compare_torch import crossjax_runner, make_batch, timed

    out = {}
    for name in models:
        run = crossjax_runner(name, make_batch(name), {})
        run(2)  # compile
        steps = max(3, int(seconds / timed(run, 3) * 3))
        out[name] = max(steps / timed(run, steps) for _ in range(2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each timing")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks import write_json
    from crossjax.benchmark import cpu_info

    if args.child:
        print(json.dumps(child(args.models, args.seconds)))
        return
    if "xla_cpu_experimental_ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
        sys.exit("xla_cpu_tuning: XLA_FLAGS already sets the YNNPACK fusion types; unset it")
    rates = {s: {m: [] for m in args.models} for s in SETTINGS}
    cmd = [sys.executable, __file__, "--child", "--seconds", str(args.seconds), "--models"]
    for r in range(args.rounds):
        for setting, value in SETTINGS.items():
            start = time.perf_counter()
            env = dict(os.environ, CROSSJAX_XLA_CPU_TUNING=value)
            done = subprocess.run(
                cmd + args.models, env=env, capture_output=True, text=True, check=False
            )
            if done.returncode:
                sys.exit(f"xla_cpu_tuning: the {setting} child failed:\n{done.stderr[-2000:]}")
            for m, v in json.loads(done.stdout.strip().splitlines()[-1]).items():
                rates[setting][m].append(v)
            print(
                f"round {r + 1}/{args.rounds} {setting}: {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    results = {"cpu": cpu_info(), "rounds": args.rounds, "models": {}}
    for m in args.models:
        on, off = (statistics.median(rates[s][m]) for s in SETTINGS)
        results["models"][m] = {
            "ynn_reduce_on_steps_per_s": on,
            "ynn_reduce_off_steps_per_s": off,
            "off_over_on": off / on,
            "all": {s: rates[s][m] for s in SETTINGS},
        }
        print(f"{m}: YNNPACK reductions on {on:.1f} steps/s, off {off:.1f}: off/on {off / on:.2f}")
    ratios = [r["off_over_on"] for r in results["models"].values()]
    gmean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    auto_off = results["cpu"]["vendor"] == "AuthenticAMD"
    results["geometric_mean_off_over_on"] = gmean
    results["faster"] = "off" if gmean > 1 else "on"
    results["auto_here"] = "off" if auto_off else "on"
    advice = (
        "crossjax's default picks it"
        if (gmean > 1) == auto_off
        else f"set CROSSJAX_XLA_CPU_TUNING={'off' if gmean > 1 else '0'} on this machine"
    )
    print(f"geometric mean off/on {gmean:.2f}: faster with them {results['faster']}; {advice}")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
