"""Benchmark the train step of a config.

    python scripts/benchmark.py --config configs/digits_fusion.py [--config.field=value ...] \
        [--synthetic] [--steps 50] [--json OUT.json]

Prints compile time, step time (median, p90), examples/s, XLA's FLOPs per step, achieved
FLOP/s and MFU against a matmul peak measured in the run's dtype, peak device memory
(where the backend reports it), input-pipeline throughput and whether the run is
input-bound; --json also writes them to a file. --trainer_overhead also runs
train_and_evaluate (no periodic eval) and a bare loop of the same jitted step on
device-resident batches, and reports both steps/s and their ratio.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from crossjax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_SYNTHETIC = flags.DEFINE_bool("synthetic", False, "Feed device-resident random batches.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps after warm-up.")
_JSON = flags.DEFINE_string("json", None, "Write the figures to this JSON file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the vocabulary goes (default: a temp dir).")
_OVERHEAD = flags.DEFINE_bool(
    "trainer_overhead", False, "Also compare train_and_evaluate's steps/s with a bare loop."
)
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    del argv
    from crossjax.benchmark import benchmark

    config = cli.config_value(_CONFIG)
    workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="crossjax-bench-")
    figures = benchmark(config, workdir, steps=_STEPS.value, synthetic=_SYNTHETIC.value)
    if _OVERHEAD.value:
        from crossjax.benchmark import trainer_overhead

        overhead = trainer_overhead(config, workdir)
        figures.update({f"overhead_{k}": v for k, v in overhead.items()})
    for key, value in figures.items():
        print(f"{key:>22}: {value:.4g}" if isinstance(value, float) else f"{key:>22}: {value}")
    if _JSON.value:
        Path(_JSON.value).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))


if __name__ == "__main__":
    cli.run(main)
