"""Train and evaluate one experiment from a config file.

    python scripts/train.py --config configs/digits_fusion.py --workdir runs/fusion \
        [--config.num_train_steps=500 ...]

Re-running the same command on a workdir with checkpoints resumes from the latest.
The final eval metrics are printed as one JSON object on the last line.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `configs.*` imports

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from crossjax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    del argv
    from crossjax.train import format_metrics, train_and_evaluate

    metrics = train_and_evaluate(cli.config_value(_CONFIG), _WORKDIR.value)
    print(format_metrics(metrics))


if __name__ == "__main__":
    cli.run(main)
