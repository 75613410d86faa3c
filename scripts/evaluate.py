"""Restore a trained run and evaluate it on its test split (or its validation split).

    python scripts/evaluate.py --workdir runs/demo [--checkpoint latest|best|STEP] [--split test|validation]

Or evaluate a config's initial parameters, its pretrained towers, without training (the
workdir receives the run's files, e.g. its vocabulary); `--nolosses` runs the config's
evaluators alone, e.g. zero-shot on labelled images that have no captions:

    python scripts/evaluate.py --config configs/clip_vit_b32.py --workdir runs/b32 [--nolosses]

Prints the metrics as one JSON object on its last line, with the split it measured.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from crossjax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Workdir of a run made by scripts/train.py (with --config: a new one)."
)
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Evaluate this config's initial (pretrained) parameters instead of a run."
)
_LOSSES = flags.DEFINE_bool("losses", True, "With --config: also the losses' eval metrics.")
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
    from crossjax.runs import evaluate_checkpoint, evaluate_config, format_metrics

    if _CONFIG.value is not None:
        config = cli.config_value(_CONFIG)
        metrics = evaluate_config(config, _WORKDIR.value, _SPLIT.value, losses=_LOSSES.value)
        print(format_metrics({"step": 0.0, "split": _SPLIT.value, **metrics}))
        return
    which = _CHECKPOINT.value
    checkpoint = int(which) if which.isdigit() else which
    if checkpoint not in ("latest", "best") and not isinstance(checkpoint, int):
        from crossjax.errors import ConfigError

        raise ConfigError(f"--checkpoint={which!r}; use latest, best or a step number")
    step, metrics = evaluate_checkpoint(_WORKDIR.value, checkpoint, _SPLIT.value)
    print(format_metrics({"step": float(step), "split": _SPLIT.value, **metrics}))


if __name__ == "__main__":
    cli.run(main)
