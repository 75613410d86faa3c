"""The scripts as a user runs them: every user error is one line, exit code 2, and the
workdir keeps what it had.

Most cases run a script in this process (`run_script`: its flag parsing, `cli.run` and
exit code, without a new interpreter importing JAX for seconds); a real subprocess checks
what only a process shows: its exit status, and SIGTERM.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import xla_flags

from crossjax.models.fusion_methods import FUSIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "configs/digits_fusion.py:tiny"


def _run(script, *args):
    env = dict(os.environ, XLA_FLAGS=xla_flags(2))
    proc = subprocess.run(
        [sys.executable, f"scripts/{script}.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def workdir_with_results(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config.model.name=nope"],
            "error: unknown model 'nope'; valid: autoencoder, captioner, fusion_classifier",
        ),
        (["--config.losses=(('nope', 1.0),)"], "error: unknown loss 'nope'; valid:"),
        (["--config.data.name=no_such_set"], "error: unknown dataset 'no_such_set'"),
        (["--config.batch_size=abc"], "error: bad flag: flag --config.batch_size=abc"),
        (["--config.batch_size=-4"], "error: config.batch_size=-4 must be >= 1"),
        (["--config.nosuchfield=3"], "error: unknown config field"),
        (["--config.data.modalities=('image', 'smell')"], "error: data.modalities="),
        (
            [
                "--config.data.name=crossjax_shapes/tiny",
                "--config.data.modalities=('image', 'audio')",
            ],
            "error: dataset 'crossjax_shapes/tiny' has no modality 'audio'",
        ),
    ],
)
def test_config_errors_are_one_line_and_keep_the_workdir(
    args, message, workdir_with_results, run_script
):
    code, _, err = run_script(
        "train", f"--config={TINY}", f"--workdir={workdir_with_results}", *args
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(message), err
    assert "Traceback" not in err
    assert (workdir_with_results / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_missing_config_file_exits_2_in_a_real_process(tmp_path):
    code, _, err = _run("train", "--config=configs/nope.py", f"--workdir={tmp_path}")
    assert (
        code == 2
        and err.strip().splitlines()[-1] == "error: config file configs/nope.py does not exist"
    )


def test_unknown_config_variant_lists_the_fusion_methods(tmp_path, run_script):
    code, _, err = run_script(
        "train", "--config=configs/digits_fusion.py:nope", f"--workdir={tmp_path}"
    )
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: unknown config variant 'nope' of configs/digits_fusion.py")
    assert f"one fusion method ({', '.join(FUSIONS.names())})" in last


def test_unwritable_workdir(tmp_path, run_script):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    code, _, err = run_script("train", f"--config={TINY}", f"--workdir={blocker}/run")
    assert code == 2 and "error: cannot write workdir" in err and "Traceback" not in err
    assert blocker.read_text() == "keep me"


def test_train_then_evaluate_print_the_same_accuracy(tmp_path, run_script):
    code, out, err = run_script("train", f"--config={TINY}", f"--workdir={tmp_path}")
    assert code == 0, err
    trained = json.loads(out.strip().splitlines()[-1])
    code, out, err = run_script("evaluate", f"--workdir={tmp_path}")
    assert code == 0, err
    evaluated = json.loads(out.strip().splitlines()[-1])
    assert evaluated["accuracy"] == trained["accuracy"] and evaluated["step"] == 8
    code, _, err = run_script("evaluate", f"--workdir={tmp_path}", "--checkpoint=3")
    assert code == 2 and "available" in err.strip().splitlines()[-1]


def test_evaluate_without_checkpoints(tmp_path, run_script):
    code, _, err = run_script("evaluate", f"--workdir={tmp_path}")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: no checkpoints in")


SCRIPTS = sorted(
    name[:-3] for name in os.listdir(os.path.join(ROOT, "scripts")) if name.endswith(".py")
)


@pytest.mark.parametrize("flag", ["-h", "--help", "--helpfull"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_flags_work_on_every_script(script, flag, run_script):
    code, out, err = run_script(script, flag)
    assert code == 0, err
    assert f"scripts/{script}.py:" in out  # the script's own flags are listed
    assert ("absl.flags:" in out) == (flag == "--helpfull"), out


def test_sigterm_exits_75_with_its_checkpoint_saved(tmp_path):
    env = dict(os.environ, XLA_FLAGS=xla_flags(2))
    args = [f"--config={TINY}", f"--workdir={tmp_path}", "--config.num_train_steps=100000"]
    proc = subprocess.Popen(
        [sys.executable, "scripts/train.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (tmp_path / "config.json").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 75, err
    assert "rerun the same command to continue" in err and "Traceback" not in err
    step = int(json.loads(out.strip().splitlines()[-1])["preempted_at_step"])
    saved = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
    assert saved == ([step] if step else [])
