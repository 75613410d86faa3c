"""Error against the number of labels (or the paired fraction): train each method at each
point of the sweep and write the table and the curve.

    python scripts/few_labels.py [--methods mnist/fixmatch,mnist/supervised] \
        [--num_labels 100,600,1000,3000] [--paired_fractions 0.1,1] [--seeds 0,1,2] \
        [--mnist DIR] [--fsdd DIR] [--workdir_root runs/reproduce] [--out results] \
        [--rerun] [--dry_run]

Each point is one `python scripts/train.py ... --config.data.num_labels=N` (or
`--config.data.paired_fraction=F`) command per seed, printed as it runs and recorded in
the results; a data flag left empty reads the TFDS catalog by name. Writes
OUT/few_labels.json, OUT/few_labels.md and OUT/few_labels.png, keeping the points already
there; a point already done (status ok) is skipped unless --rerun. Methods:
crossjax/few_labels.py (`METHODS`; each has a `:tiny` twin). The multimodal VAE's
coherence needs the MNIST CNN judge at WORKDIR_ROOT/coherence/mnist_cnn
(`python scripts/reproduce.py --rows mnist_cnn` puts it there). Exit code 1 when a point
failed (the others still ran).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from crossjax import cli  # noqa: E402

_METHODS = flags.DEFINE_list("methods", [], "Methods to run (default: every MNIST method).")
_NUM_LABELS = flags.DEFINE_list("num_labels", ["100", "600", "1000", "3000"], "Label counts.")
_PAIRED = flags.DEFINE_list("paired_fractions", [], "Paired fractions (paired_fraction methods).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds of every point.")
_MNIST = flags.DEFINE_string("mnist", "", "Folder of the four MNIST idx files ('': TFDS mnist).")
_FSDD = flags.DEFINE_string(
    "fsdd", "", "Folder of the FSDD recordings {digit}_{speaker}_{take}.wav ('': TFDS)."
)
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "runs/reproduce", "Where the runs go.")
_OUT = flags.DEFINE_string("out", "results", "Folder of few_labels.json, .md and .png.")
_RERUN = flags.DEFINE_bool("rerun", False, "Train points that the results already hold.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the training commands; run nothing.")


def _numbers(values: list[str], kind: type, flag: str) -> list:
    from crossjax.errors import ConfigError

    try:
        return [kind(v) for v in values]
    except ValueError:
        raise ConfigError(f"--{flag}={','.join(values)}: use {kind.__name__}s") from None


def main(argv: list[str]) -> int:
    del argv
    from crossjax import few_labels

    seeds = _numbers(_SEEDS.value, int, "seeds")
    rows = few_labels.sweep_rows(
        few_labels.select_methods(_METHODS.value),
        _numbers(_NUM_LABELS.value, int, "num_labels"),
        _numbers(_PAIRED.value, float, "paired_fractions"),
    )
    paths = {"mnist": _MNIST.value, "fsdd": _FSDD.value}
    paths = {k: str(Path(v).resolve()) if v else "" for k, v in paths.items()}
    if _DRY_RUN.value:
        for command in few_labels.dry_run_commands(rows, seeds, paths, _WORKDIR_ROOT.value):
            print(command)
        return 0
    results = few_labels.run_sweep(
        rows, seeds, paths, _WORKDIR_ROOT.value, _OUT.value, rerun=_RERUN.value
    )
    print(f"wrote {Path(_OUT.value) / 'few_labels.json'}, few_labels.md and few_labels.png")
    return 1 if any(r["status"] != "ok" for r in results) else 0


if __name__ == "__main__":
    cli.run(main)
