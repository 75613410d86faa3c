"""Reproduce published figures: train each named row's runs and write the results table.

    python scripts/reproduce.py [--rows mnist_cnn,mnist_vae] [--seeds 0,1,2] \
        [--mnist DIR] [--fashion_mnist DIR] [--fsdd DIR] \
        [--workdir_root runs/reproduce] [--out results] [--reuse] [--dry_run]

Each row is one or more `python scripts/train.py ...` commands (printed as it runs, and
recorded in the results); a data flag left empty reads the TFDS catalog by name
(`mnist`, `fashion_mnist`, `spoken_digit`). Writes OUT/reproductions.json and
OUT/reproductions.md, merging into rows already there. With --reuse, a run whose workdir
already holds its final validation and test records is read, not trained again (a sweep
resumed after a stop, or seeds added to a row). Rows: crossjax/reproduce.py
(`ROWS`; every row also has a `:tiny` twin of a few steps). Exit code 1 when a row
failed (the others still ran).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from crossjax import cli  # noqa: E402

_ROWS = flags.DEFINE_list("rows", [], "Rows to run (default: every full row).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds of every row.")
_MNIST = flags.DEFINE_string("mnist", "", "Folder of the four MNIST idx files ('': TFDS mnist).")
_FASHION = flags.DEFINE_string(
    "fashion_mnist", "", "Folder of the Fashion-MNIST idx files ('': TFDS fashion_mnist)."
)
_FSDD = flags.DEFINE_string(
    "fsdd",
    "",
    "Folder of the FSDD recordings {digit}_{speaker}_{take}.wav ('': TFDS spoken_digit).",
)
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "runs/reproduce", "Where the runs go.")
_OUT = flags.DEFINE_string("out", "results", "Folder of reproductions.json and .md.")
_REUSE = flags.DEFINE_bool(
    "reuse", False, "Read finished runs in their workdirs instead of training them again."
)
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the training commands; run nothing.")


def main(argv: list[str]) -> int:
    del argv
    from crossjax import reproduce
    from crossjax.errors import ConfigError

    try:
        seeds = [int(s) for s in _SEEDS.value]
    except ValueError:
        raise ConfigError(f"--seeds={','.join(_SEEDS.value)}: use integers, e.g. 0,1,2") from None
    rows = reproduce.select_rows(_ROWS.value)
    paths = {"mnist": _MNIST.value, "fashion_mnist": _FASHION.value, "fsdd": _FSDD.value}
    paths = {k: str(Path(v).resolve()) if v else "" for k, v in paths.items()}
    if _DRY_RUN.value:
        for command in reproduce.dry_run_commands(rows, seeds, paths, _WORKDIR_ROOT.value):
            print(command)
        return 0
    results = reproduce.run_rows(rows, seeds, paths, _WORKDIR_ROOT.value, reuse=_REUSE.value)
    reproduce.write_results(results, _OUT.value)
    print(f"wrote {Path(_OUT.value) / 'reproductions.json'} and reproductions.md")
    return 1 if any(r["status"] != "ok" for r in results) else 0


if __name__ == "__main__":
    cli.run(main)
