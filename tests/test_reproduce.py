"""scripts/reproduce.py end to end on tiny idx fixtures (the rows' `:tiny` twins), and the
pieces of crossjax.reproduce: row selection, checkpoint choice, merging, the table."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossjax import reproduce
from crossjax.errors import ConfigError
from tests.test_av_digits import write_sources
from tests.test_real_data import _idx

ROOT = Path(__file__).resolve().parents[1]


def write_mnist_idx(root: Path, train: int = 560, test: int = 260) -> Path:
    """Gzipped MNIST-format idx files: enough digits for the tiny slices (512 / 256)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):  # a bar whose place tells the label
            images[i, 4:24, 2 + 2 * label : 6 + 2 * label] = 255
        _idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def _reproduce(tmp_path, *flags):
    return subprocess.run(
        [sys.executable, "scripts/reproduce.py", f"--workdir_root={tmp_path / 'runs'}",
         f"--out={tmp_path / 'results'}", *flags],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip


def test_reproduce_runs_rows_records_failures_and_merges(tmp_path, run_script, commands_in_process):
    """One pass over three rows (the judge, the VAE, and the audio-visual MVAE judged by
    the first), scripts/reproduce.py and its training runs in this process; then a failing
    rerun of one row, in real processes, keeps the others."""
    mnist = write_mnist_idx(tmp_path / "mnist")
    _, fsdd = write_sources(tmp_path / "av")
    code, _, err = run_script(
        "reproduce", f"--workdir_root={tmp_path / 'runs'}", f"--out={tmp_path / 'results'}",
        "--rows=av_digits_mvae:tiny,mnist_vae:tiny,mnist_cnn:tiny", f"--mnist={mnist}",
        f"--fsdd={fsdd}",
    )  # fmt: skip
    assert code == 0, err[-3000:]
    rows = json.loads((tmp_path / "results" / "reproductions.json").read_text())
    names = ["mnist_cnn:tiny", "mnist_vae:tiny", "av_digits_mvae:tiny"]
    assert [r["name"] for r in rows] == names  # judge first
    # The judge row links its run as runs/coherence/mnist_cnn_tiny; the audio-visual MVAE
    # row (full and with missing modalities) reads it for audio -> image coherence.
    vae = rows.pop()
    assert vae["metric"] == "coherence/audio_to_image" and 0.0 <= vae["test"] <= 1.0
    assert set(vae["compared"]) == {"full", "missing"}
    assert "_missing" in vae["command"] and f"pairing_sources.spoken_digit={fsdd}" in vae["command"]
    for row in rows:
        assert {"name", "published", "target", "test", "validation", "seeds", "command",
                "wall_s", "met"} <= set(row)  # fmt: skip
        assert row["status"] == "ok" and row["seeds"] == [0]
        assert f"--config.data.source.path={mnist}" in row["command"]
        assert row["command"].startswith("python scripts/train.py --config=configs/mnist_")
    cnn, vae = rows
    assert 0.0 <= cnn["test"] <= 1.0 and cnn["met"] is False  # 8 steps: far from 0.991
    assert vae["test"] > 0 and vae["test_iwae_nll"] > 0
    judge = tmp_path / "runs" / "coherence" / "mnist_cnn_tiny"
    assert (judge / "metrics.jsonl").exists()
    table = (tmp_path / "results" / "reproductions.md").read_text()
    assert "| mnist_cnn:tiny |" in table and "iwae_nll" in table

    # --reuse reads the finished run instead of training it again: same figures, same files.
    metrics = sorted((tmp_path / "runs").glob("mnist_cnn*seed0/metrics.jsonl"))
    assert len(metrics) == 1
    before = metrics[0].stat().st_mtime_ns
    code, out, err = run_script(
        "reproduce", f"--workdir_root={tmp_path / 'runs'}", f"--out={tmp_path / 'results'}",
        "--rows=mnist_cnn:tiny", f"--mnist={mnist}", "--reuse",
    )  # fmt: skip
    assert code == 0, err[-3000:]
    assert "finished before, reading" in out and metrics[0].stat().st_mtime_ns == before
    again = json.loads((tmp_path / "results" / "reproductions.json").read_text())
    assert next(r for r in again if r["name"] == "mnist_cnn:tiny")["test"] == cnn["test"]

    # A failing row is recorded with its log; the rows already there are kept.
    done = _reproduce(tmp_path, "--rows=mnist_vae:tiny", f"--mnist={tmp_path / 'nowhere'}")
    assert done.returncode == 1
    rows = {
        r["name"]: r for r in json.loads((tmp_path / "results" / "reproductions.json").read_text())
    }
    assert rows["mnist_cnn:tiny"]["status"] == "ok"
    failed = rows["mnist_vae:tiny"]
    assert failed["status"] == "failed" and failed["met"] is False and failed["test"] is None
    assert "nowhere" in Path(failed["log"]).read_text()


def test_dry_run_prints_the_commands(tmp_path):
    done = _reproduce(tmp_path, "--dry_run", "--rows=mnist_cnn", "--seeds=0,1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all("--config=configs/mnist_cnn.py" in line for line in lines)
    assert "--config.seed=1" in lines[1] and "source.path" not in lines[0]  # TFDS by name
    assert not (tmp_path / "results").exists()


def test_select_rows_keeps_registry_order_and_names_valid_rows():
    names = [r.name for r in reproduce.select_rows(["mnist_vae", "mnist_cnn"])]
    assert names == ["mnist_cnn", "mnist_vae"]
    assert [r.name for r in reproduce.select_rows(None)] == [r.name for r in reproduce.ROWS]
    with pytest.raises(ConfigError, match="valid: .*mnist_cnn"):
        reproduce.select_rows(["mnist_nope"])
    assert reproduce.with_flag("configs/x.py", "tiny") == "configs/x.py:tiny"
    assert reproduce.with_flag("configs/x.py:fashion", "tiny") == "configs/x.py:fashion_tiny"


def _records(workdir, validation, test, best_metric="accuracy", mode="max"):
    workdir.mkdir()
    lines = [{"step": s, "split": "validation", "accuracy": v} for s, v in validation]
    lines.append({"step": validation[-1][0], "split": "test", "accuracy": test})
    (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (workdir / "config.json").write_text(
        json.dumps({"best_metric": best_metric, "best_mode": mode})
    )


def test_chosen_figures_are_the_final_records_when_the_final_checkpoint_is_best(tmp_path):
    _records(tmp_path / "a", [(10, 0.5), (20, 0.7)], 0.69)
    validation, test = reproduce.chosen_figures(tmp_path / "a", tmp_path / "a.log")
    assert validation["accuracy"] == 0.7 and test["accuracy"] == 0.69
    # min mode: the lowest validation figure wins, here the final one as well
    _records(tmp_path / "b", [(10, 0.9), (20, 0.3)], 0.2, "accuracy", "min")
    validation, _ = reproduce.chosen_figures(tmp_path / "b", tmp_path / "b.log")
    assert validation["step"] == 20


def test_chosen_figures_evaluates_an_earlier_best_checkpoint(tmp_path, monkeypatch):
    _records(tmp_path / "a", [(10, 0.8), (20, 0.7)], 0.69)
    calls = []

    def fake_run(argv, log_path):
        calls.append(argv)
        return 'progress\n{"step": 10.0, "split": "test", "accuracy": 0.79}\n'

    monkeypatch.setattr(reproduce, "_run_logged", fake_run)
    validation, test = reproduce.chosen_figures(tmp_path / "a", tmp_path / "a.log")
    assert validation["step"] == 10 and test["accuracy"] == 0.79
    assert "--checkpoint=best" in calls[0] and "--split=test" in calls[0]


def test_checks_merge_and_table():
    assert reproduce.at_least(0.9)({"a": 0.91}) and not reproduce.at_most(106)({"a": 107.0})
    assert reproduce.above_others({"fused": 0.9, "image": 0.8, "audio": 0.85})
    assert not reproduce.above_others({"fused": 0.9, "image": 0.95})
    drop = reproduce.at_least_with_drop(0.9, 0.03)
    assert drop({"full": 0.93, "missing": 0.91}) and not drop({"full": 0.93, "missing": 0.89})
    old = [{"name": "mnist_vae", "x": 1}, {"name": "mine", "x": 2}]
    new = [{"name": "mnist_vae", "x": 3}, {"name": "mnist_cnn", "x": 4}]
    merged = reproduce.merge_results(old, new)
    assert [(r["name"], r["x"]) for r in merged] == [
        ("mnist_cnn", 4),
        ("mnist_vae", 3),
        ("mine", 2),
    ]
    assert reproduce.mean_spread([1.0, 3.0]) == (2.0, 1.0)
    row = {"name": "r", "published": "p", "target": "t", "metric": "accuracy", "seeds": [0, 1],
           "test": 0.5, "test_spread": 0.1, "validation": 0.6, "validation_spread": 0.0,
           "met": True, "wall_s": 3.0, "command": "python x"}  # fmt: skip
    assert "| r | p | t | accuracy | 0.5000 ± 0.1000 | 0.6000 ± 0.0000 | 2 | yes | 3.0 |" in (
        reproduce.results_markdown([row])
    )
