"""Train and evaluate one experiment from a config file.

    python scripts/train.py --config configs/digits_fusion.py --workdir runs/fusion \
        [--config.num_train_steps=500 ...]

Re-running the same command on a workdir with checkpoints resumes from the latest
(`--restore_step=best|STEP` resumes from an older one; the newer ones are replaced).
The final validation and test metrics are printed as one JSON object each.

Exit codes: 0 done; 2 bad input (one `error:` line); 75 preempted by SIGTERM/SIGINT,
checkpoint saved, rerun the same command to continue; 1 unexpected.

Several hosts (the workdir on a shared file system): run the same command on each with
`--distributed` (JAX auto-detects SLURM, TPU pods, ...) or with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
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
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Initialise jax.distributed (auto-detected on SLURM, TPU pods, ...)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-host)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_RESTORE_STEP = flags.DEFINE_string(
    "restore_step", "latest", "Checkpoint to resume from: latest, best, or a step number."
)
_TRUST = flags.DEFINE_bool(
    "trust_run_code",
    False,
    "Let a coherence judge's saved config import 'module:attr' names (code outside crossjax).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int:
    del argv
    from crossjax.registry import set_trust_run_code

    set_trust_run_code(_TRUST.value)
    if _DISTRIBUTED.value or _COORDINATOR.value or _NUM_PROCESSES.value:
        from crossjax.sharding import initialize_distributed

        initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from crossjax.runs import format_metrics
    from crossjax.train import train_and_evaluate

    which = _RESTORE_STEP.value
    restore_step = int(which) if which.isdigit() else which
    results = train_and_evaluate(
        cli.config_value(_CONFIG), _WORKDIR.value, restore_step=restore_step
    )
    if "test" not in results:  # preempted: nothing was evaluated
        print(format_metrics(results))
        print(
            f"preempted at step {int(results['preempted_at_step'])}; rerun the same command "
            "to continue",
            file=sys.stderr,
        )
        return cli.EXIT_PREEMPTED
    for split in ("validation", "test"):
        print(format_metrics({"split": split, **results[split]}))
    return 0


if __name__ == "__main__":
    cli.run(main)
