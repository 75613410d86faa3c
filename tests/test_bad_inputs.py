"""Bad inputs as a user (or an adversary) gives them: each ends with exit code 2, one
`error:` line and no traceback, and a finished run directory stays byte for byte as it was.

Most cases call the library under `cli.call` (what the scripts run `main` under) in this
process; the few that need flag parsing run a script in this process too (`run_script`),
and the trust boundary, which needs a module path of its own, in a subprocess.
"""

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest
from conftest import xla_flags

from configs import digits_fusion
from crossjax import cli, runs
from crossjax import train as train_lib
from crossjax.checkpoint import Checkpoints, WorkdirLock
from crossjax.config import load_config_file
from crossjax.metric_writer import MetricWriter, save_png

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def _config(**changes) -> ml_collections.ConfigDict:
    """The tiny digits config with dotted `changes` (any type: "a.b": value; None deletes)."""
    config = digits_fusion.get_config("tiny")
    config.num_train_steps = STEPS
    config.checkpoint_every = 2
    config.log_every = 2
    tree = config.to_dict()
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = tree
        for key in path:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return ml_collections.ConfigDict(tree)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("finished")
    train_lib.train_and_evaluate(_config(), str(workdir))
    return workdir


def _checksums(workdir: Path) -> dict[str, str]:
    """sha256 of every file of a run (but the lock file, which holds the last pid)."""
    return {
        str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(workdir.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _corrupt_copy(finished: Path, tmp: Path) -> Path:
    run = tmp / "corrupt"
    shutil.copytree(finished, run)
    for f in run.glob("checkpoints/*/state/d/*"):
        os.truncate(f, os.path.getsize(f) // 2)
    return run


def _planted_run(finished: Path, tmp: Path, mp) -> Path:
    """A copy of the run whose saved config names a model in a module planted beside it."""
    runs_dir = tmp / "runs"
    run = runs_dir / "someone_elses"
    shutil.copytree(finished, run)
    (runs_dir / "planted.py").write_text(
        f"open({str(tmp / 'imported')!r}, 'w').close()\ndef model(config, spec): ...\n"
    )
    mp.syspath_prepend(str(runs_dir))
    for saved in [run / "config.json", *run.glob("checkpoints/*/config/*")]:
        if saved.is_file():
            saved.write_text(saved.read_text().replace('"fusion_classifier"', '"planted:model"'))
    return run


def _raise_oserror(code):
    def raiser(*args, **kwargs):
        raise OSError(code, os.strerror(code), "WORKDIR/some_file")

    return raiser


def _train(changes=None, *, workdir=None, **kwargs):
    """A case: train `_config(**changes)` in `workdir(finished, tmp)` (default: the finished run)."""

    def case(finished, tmp, mp):
        where = workdir(finished, tmp) if workdir else finished
        return cli.call(
            train_lib.train_and_evaluate, _config(**(changes or {})), str(where), **kwargs
        )

    return case


def _patched(target, name, code, changes=None):
    """A case: training a fresh run while `target.name` fails with OSError `code`."""

    def case(finished, tmp, mp):
        mp.setattr(target, name, _raise_oserror(code))
        return cli.call(train_lib.train_and_evaluate, _config(**(changes or {})), str(tmp / "run"))

    return case


def _evaluate(workdir, checkpoint="latest", split="test"):
    def case(finished, tmp, mp):
        return cli.call(runs.evaluate_checkpoint, workdir(finished, tmp, mp), checkpoint, split)

    return case


def _generate_images(workdir: Path) -> None:
    """What scripts/generate.py does: text -> image with the run's first test examples."""
    gen = runs.load_generator(workdir)
    gen(gen.eval_examples(2), sources=("text",), targets=("image",))


def _config_file(text):
    def case(finished, tmp, mp):
        path = tmp / "user_config.py"
        if text is not None:
            path.write_text(text)
        return cli.call(load_config_file, str(path))

    return case


def _file(tmp: Path) -> Path:
    blocker = tmp / "a_file"
    blocker.write_text("not a folder")
    return blocker


CASES = {
    # -- config values --------------------------------------------------------------------
    "batch_size=0": _train({"batch_size": 0}),
    "batch_size=-4": _train({"batch_size": -4}),
    "batch_size='16'": _train({"batch_size": "16"}),
    "batch_size=True": _train({"batch_size": True}),
    "batch_size=12 on 8 devices": _train({"batch_size": 12}),
    "num_train_steps=0": _train({"num_train_steps": 0}),
    "num_train_steps=2.5": _train({"num_train_steps": 2.5}),
    "log_every=0": _train({"log_every": 0}),
    "checkpoint_every=0": _train({"checkpoint_every": 0}),
    "keep_checkpoints=0": _train({"keep_checkpoints": 0}),
    "seed=-1": _train({"seed": -1}),
    "eval_every=-1": _train({"eval_every": -1}),
    "num_devices=-1": _train({"num_devices": -1}),
    "num_devices=64": _train({"num_devices": 64}),
    "model_parallel=3": _train({"model_parallel": 3}),
    "grad_accum_steps=3": _train({"grad_accum_steps": 3}),
    "best_mode=median": _train({"best_mode": "median"}),
    "param_sharding=rows": _train({"param_sharding": "rows"}),
    "no seed field": _train({"seed": None}),
    "model is not a section": _train({"model": 1}),
    "model.name=nope": _train({"model.name": "nope"}),
    "model.name empty": _train({"model.name": ""}),
    "model.name=missing module": _train({"model.name": "no_such_module:model"}),
    "model.fusion=nope": _train({"model.fusion": "nope"}),
    "model.image_encoder=nope": _train({"model.image_encoder": "nope"}),
    "data.name empty": _train({"data.name": ""}),
    "data.name=no_such_set": _train({"data.name": "no_such_set"}),
    "data.modalities smell": _train({"data.modalities": ("image", "smell")}),
    "optimizer.name=lion": _train({"optimizer.name": "lion"}),
    "optimizer.schedule=linear": _train({"optimizer.schedule": "linear"}),
    "optimizer.learning_rate=fast": _train({"optimizer.learning_rate": "fast"}),
    "optimizer.warmup_steps=-1": _train({"optimizer.warmup_steps": -1}),
    "loss nope": _train({"losses": (("nope", 1.0),)}),
    "loss from a missing module": _train({"losses": (("no_such_module:fn", 1.0),)}),
    "loss missing in its module": _train({"losses": (("crossjax.losses:no_such_fn", 1.0),)}),
    "evaluator nope": _train({"evaluators": ("nope",)}),
    "evaluator bad kwarg": _train({"evaluators": (("retrieval", {"bogus": 1}),)}),
    "evaluator entry malformed": _train({"evaluators": ((1, 2, 3),)}),
    # -- restore steps ----------------------------------------------------------------------
    "restore_step=newest": _train(restore_step="newest"),
    "restore_step=-1": _train(restore_step=-1),
    "restore_step=99": _train(restore_step=99),
    "restore_step=best, no checkpoints": _train(
        restore_step="best", workdir=lambda f, t: t / "empty"
    ),
    # -- workdirs ---------------------------------------------------------------------------
    "workdir is a file": _train(workdir=lambda f, t: _file(t)),
    "workdir under a file": _train(workdir=lambda f, t: _file(t) / "run"),
    "workdir read-only (/proc)": _train(workdir=lambda f, t: Path("/proc/crossjax_run")),
    # -- data dirs --------------------------------------------------------------------------
    "data_dir is a file": lambda f, t, mp: _train(
        {"data.data_dir": str(_file(t))}, workdir=lambda f, t: t / "run"
    )(f, t, mp),
    "data_dir under a file": lambda f, t, mp: _train(
        {"data.data_dir": str(_file(t) / "data")}, workdir=lambda f, t: t / "run"
    )(f, t, mp),
    "data_dir read-only (/proc)": _train(
        {"data.data_dir": "/proc/crossjax_data"}, workdir=lambda f, t: t / "run"
    ),
    # -- disk full or read-only while writing -----------------------------------------------
    "disk full saving a checkpoint": _patched(Checkpoints, "save", errno.ENOSPC),
    "disk full writing metrics": _patched(MetricWriter, "write_scalars", errno.ENOSPC),
    "disk full writing config.json": _patched(Path, "write_text", errno.ENOSPC),
    "read-only workdir taking the lock": _patched(WorkdirLock, "__enter__", errno.EROFS),
    "generate into a file-blocked folder": lambda f, t, mp: cli.call(
        save_png, _file(t) / "generated" / "x.png", __import__("numpy").zeros((4, 4, 1))
    ),
    # -- evaluating runs --------------------------------------------------------------------
    "evaluate an empty dir": _evaluate(lambda f, t, mp: t),
    "evaluate a missing dir": _evaluate(lambda f, t, mp: t / "nope"),
    "evaluate checkpoint 3": _evaluate(lambda f, t, mp: f, 3),
    "evaluate checkpoint newest": _evaluate(lambda f, t, mp: f, "newest"),
    "evaluate every checkpoint corrupt": _evaluate(lambda f, t, mp: _corrupt_copy(f, t)),
    "evaluate a planted module": _evaluate(lambda f, t, mp: _planted_run(f, t, mp)),
    "generate from a classifier run": lambda f, t, mp: cli.call(_generate_images, f),
    # -- config files -----------------------------------------------------------------------
    "config file missing": _config_file(None),
    "config file syntax error": _config_file("def get_config(:\n"),
    "config file get_config raises": _config_file("def get_config():\n    raise KeyError('x')\n"),
    "config file without get_config": _config_file("x = 1\n"),
    "config file import fails": _config_file("import no_such_module\n"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_keeps_a_finished_run(name, finished, tmp_path, capfd):
    before = _checksums(finished)
    with pytest.MonkeyPatch.context() as mp:
        code = CASES[name](finished, tmp_path, mp)
    err = capfd.readouterr().err
    assert code == cli.EXIT_USER_ERROR, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) < 600, err
    assert _checksums(finished) == before


def test_a_live_run_on_the_workdir_is_refused(finished, capfd):
    before = _checksums(finished)
    with WorkdirLock(finished):
        code = cli.call(train_lib.train_and_evaluate, _config(), str(finished))
    assert code == cli.EXIT_USER_ERROR
    assert "in use by a live run" in capfd.readouterr().err
    assert _checksums(finished) == before


def _script(*args: str, timeout: int = 300, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS=xla_flags(2), **env_vars)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args",
    [
        ["scripts/train.py", "--config=CONFIG", "--workdir=FINISHED"],
        [
            "scripts/train.py",
            "--config=configs/digits_fusion.py",
            "--workdir=FINISHED",
            "--restore_step=newest",
        ],
        ["scripts/evaluate.py", "--workdir=FINISHED", "--checkpoint=newest"],
        [
            "scripts/generate.py",
            "--workdir=FINISHED",
            "--sources=text",
            "--targets=image",
            "--num=0",
        ],
    ],
    ids=["config syntax error", "restore_step", "evaluate checkpoint", "generate num"],
)
def test_scripts_report_bad_input_in_one_line(args, finished, tmp_path, run_script):
    config = tmp_path / "broken.py"
    config.write_text("def get_config(:\n")
    args = [a.replace("CONFIG", str(config)).replace("FINISHED", str(finished)) for a in args]
    before = _checksums(finished)
    script = args[0].removeprefix("scripts/").removesuffix(".py")
    code, _, err = run_script(script, *args[1:])
    assert code == cli.EXIT_USER_ERROR, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert _checksums(finished) == before


def test_a_planted_module_is_imported_only_with_trust_run_code(finished, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        run = _planted_run(finished, tmp_path, mp)
        # The planted module is importable (as a module inside runs/ is when the scripts
        # put the repository root on the path); only the trust boundary keeps it out.
        proc = _script("scripts/evaluate.py", f"--workdir={run}", PYTHONPATH=str(run.parent))
        assert proc.returncode == cli.EXIT_USER_ERROR, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert "'planted:model'" in last and "--trust_run_code" in last, last
        assert not (tmp_path / "imported").exists()
        with pytest.raises(Exception):  # noqa: B017 - the planted "model" is not one
            runs.restore_run(run, trust_run_code=True)
        assert (tmp_path / "imported").exists()  # the flag is what lets it in


def test_cases_cover_at_least_fifty_bad_inputs():
    assert len(CASES) >= 50
