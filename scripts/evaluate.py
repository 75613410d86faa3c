"""Restore a trained run and evaluate it on its test split (or its validation split).

    python scripts/evaluate.py --workdir runs/demo [--checkpoint latest|best|STEP] [--split test|validation]

Prints the metrics as one JSON object on its last line, with the split it measured.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from crossjax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a run made by scripts/train.py.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best, or a step number.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "The split to evaluate.")
_TRUST = flags.DEFINE_bool(
    "trust_run_code",
    False,
    "Let the run's saved config import 'module:attr' names (code outside crossjax); only "
    "for runs you trust.",
)
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    del argv
    from crossjax.registry import set_trust_run_code

    set_trust_run_code(_TRUST.value)
    from crossjax.runs import evaluate_checkpoint, format_metrics

    which = _CHECKPOINT.value
    checkpoint = int(which) if which.isdigit() else which
    if checkpoint not in ("latest", "best") and not isinstance(checkpoint, int):
        from crossjax.errors import ConfigError

        raise ConfigError(f"--checkpoint={which!r}; use latest, best or a step number")
    step, metrics = evaluate_checkpoint(_WORKDIR.value, checkpoint, _SPLIT.value)
    print(format_metrics({"step": float(step), "split": _SPLIT.value, **metrics}))


if __name__ == "__main__":
    cli.run(main)
