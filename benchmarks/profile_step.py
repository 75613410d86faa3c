"""Where the time of crossjax's train step goes on CPU, op by op, for the models of
benchmarks/compare_torch.py.

    python benchmarks/profile_step.py [--models vae cnn two_tower captioner] [--steps 10]
        [--top 12] [--json results/profile_step.json]

Traces `--steps` warm steps with `jax.profiler` (a Perfetto trace in a temporary folder)
and sums the time of XLA:CPU's operations (fusions, dots, copies: the thunks it runs).
Each one is named from the compiled HLO: its kind (the fusion's name without its number:
`ynn_fusion` are YNNPACK's matmuls, `*_reduce_fusion` reductions, `copy_*`/`transpose_*`
layout changes) and the model code it came from (the op_name of its metadata, e.g.
`.../resblocks_1/mlp/c_fc/reduce_sum`). Prints per model the step time, the op time per
step (above the step time when the two cores run ops side by side), the top kinds and
the top ops with their source.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from benchmarks import write_json  # noqa: E402
from benchmarks.compare_torch import BENCHES, crossjax_runner, make_batch  # noqa: E402
from crossjax.benchmark import cpu_info  # noqa: E402

# One HLO instruction of the compiled module: `%name = type op(...), ... op_name="..."`.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?metadata=\{[^}]*op_name=\"([^\"]*)\"")


def op_sources(hlo_text: str) -> dict[str, str]:
    """{instruction name: the model code it came from} of a compiled module's HLO text."""
    sources = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            sources[match.group(1)] = re.sub(r"^jit\([^)]*\)/", "", match.group(2))
    return sources


def kind(name: str) -> str:
    """An op's kind: its name without XLA's numbering ("add_reduce_fusion.7" ->
    "add_reduce_fusion")."""
    return re.sub(r"(\.\d+)+$", "", name)


def profile(name: str, steps: int, top: int) -> dict:
    batch = make_batch(name)
    run = crossjax_runner(name, batch, {})
    run(3)  # compile and warm
    start = time.perf_counter()
    run(steps)
    step_ms = (time.perf_counter() - start) / steps * 1e3
    compiled = run.compiled_text()
    sources = op_sources(compiled)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            run(steps)
        traces = glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True)
        if not traces:
            sys.exit("profile_step: jax.profiler wrote no Perfetto trace; is it supported here?")
        events = json.load(gzip.open(traces[0]))
    events = events["traceEvents"] if isinstance(events, dict) else events
    by_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in sources:
            by_op[e["name"]] += e.get("dur", 0) / 1e3 / steps  # us -> ms per step
    by_kind: collections.Counter = collections.Counter()
    for op, ms in by_op.items():
        by_kind[kind(op)] += ms
    return {
        "batch_size": BENCHES[name].batch_size,
        "step_ms": step_ms,
        "op_ms_per_step": sum(by_op.values()),
        "kinds": [{"kind": k, "ms": ms} for k, ms in by_kind.most_common(top)],
        "ops": [{"op": op, "ms": ms, "source": sources[op]} for op, ms in by_op.most_common(top)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = {"cpu": cpu_info(), "jax": jax.__version__, "models": {}}
    for name in args.models:
        r = results["models"][name] = profile(name, args.steps, args.top)
        print(
            f"\n{name} (batch {r['batch_size']}): {r['step_ms']:.1f} ms a step, "
            f"{r['op_ms_per_step']:.1f} ms of ops (summed over threads)"
        )
        for k in r["kinds"]:
            print(f"  {k['ms']:7.2f} ms  {k['kind']}")
        print("  top ops:")
        for o in r["ops"]:
            print(f"  {o['ms']:7.2f} ms  {o['op']:<28} {o['source'][:90]}")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
