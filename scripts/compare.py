"""Train every fusion method on crossjax_digits and write a comparison table and plot.

    python scripts/compare.py --out results/fusion [--steps 1500] \
        [--methods concat,gated] [--timing_steps 50] [--variant tiny] [--seed 1]

The methods are those registered in the fusion registry (default: all); each trains in
OUT/<method> from configs/digits_fusion.py:<method>[_<variant>]; rerunning skips finished
methods. Writes OUT/README.md, OUT/robustness.png and OUT/results.json.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `configs.*` imports

from absl import flags  # noqa: E402

from crossjax import cli  # noqa: E402

_OUT = flags.DEFINE_string("out", "results/fusion", "Directory for the runs and the report.")
_STEPS = flags.DEFINE_integer("steps", None, "Train steps per method (default: the config's).")
_METHODS = flags.DEFINE_list(
    "methods", None, "Fusion methods to compare (default: every registered one)."
)
_TIMING_STEPS = flags.DEFINE_integer("timing_steps", 50, "Train steps timed per method.")
_VARIANT = flags.DEFINE_string("variant", None, "Config variant flags, e.g. tiny or clean.")
_SEED = flags.DEFINE_integer("seed", None, "config.seed of every method (default: the config's).")


def main(argv: list[str]) -> None:
    del argv
    from crossjax import compare

    methods = _METHODS.value or compare.methods()
    configs = {m: compare.method_config(m, _VARIANT.value, ROOT / "configs") for m in methods}
    if _SEED.value is not None:
        for config in configs.values():
            config.seed = _SEED.value
    command = " ".join(["python", "scripts/compare.py", *sys.argv[1:]])
    results = compare.compare(
        configs,
        _OUT.value,
        steps=_STEPS.value,
        timing_steps=_TIMING_STEPS.value,
        command=command,
    )
    print(compare.markdown_table(results))


if __name__ == "__main__":
    cli.run(main)
