"""Two processes on localhost (4 fake CPU devices each) train like one process with 8 (the
test session's own devices)."""

import json
import os
import socket
import subprocess
import sys

from conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=configs/digits_fusion.py:tiny", "--config.model.dropout=0.0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(
        os.environ,
        XLA_FLAGS=xla_flags(devices),
        JAX_PLATFORMS="cpu",
    )
    # Two processes compile the same programs at once: without the `filelock` package JAX
    # writes cache entries without a lock, and a half-written entry read by the other
    # process costs a warning and a compilation. No cache here (set but empty: off; unset,
    # the trainer would use the user's ~/.cache/crossjax/xla).
    env["JAX_COMPILATION_CACHE_DIR"] = ""
    return env


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_two_processes_match_one_process_with_eight_devices(tmp_path, run_script):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "scripts/train.py",
                *ARGS,
                f"--workdir={tmp_path / 'multi'}",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=400) for p in procs]
    except subprocess.TimeoutExpired:  # one process failing leaves the other waiting
        for p in procs:
            p.kill()
        errors = [p.communicate()[1][-2000:] for p in procs]
        raise AssertionError(f"the processes did not finish; stderr: {errors}") from None
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    first, second = (_last_json(out) for out, _ in outputs)
    assert first == second  # both processes see the same global evaluation

    # The one-process reference runs in this process: the test session's 8 fake devices.
    code, out, err = run_script("train", *ARGS, f"--workdir={tmp_path / 'single'}")
    assert code == 0, err[-3000:]
    reference = _last_json(out)
    assert abs(first["loss"] - reference["loss"]) < 1e-5
    assert first["accuracy"] == reference["accuracy"]

    def train_losses(workdir):
        with open(workdir / "metrics.jsonl") as f:
            return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]

    multi, one = train_losses(tmp_path / "multi"), train_losses(tmp_path / "single")
    assert len(multi) == len(one) == 2
    assert max(abs(a - b) for a, b in zip(multi, one, strict=True)) < 1e-5
    assert (tmp_path / "multi" / "checkpoints" / "8").is_dir()
