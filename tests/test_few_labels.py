"""scripts/few_labels.py end to end on a tiny idx fixture (one tiny FixMatch run, then a
rerun that skips it and one that reads the finished run back), and the pieces of
crossjax.few_labels: methods, sweep points, the table with the published figures."""

import json

import pytest

from crossjax import few_labels
from crossjax.errors import ConfigError
from tests.test_reproduce import write_mnist_idx


def test_sweep_trains_writes_json_table_curve_and_skips_finished_points(
    tmp_path, run_script, commands_in_process
):
    """scripts/few_labels.py and its training command run in this process (real processes:
    tests/test_reproduce.py's failing rerun, through the same reproduce.run_row)."""
    mnist = write_mnist_idx(tmp_path / "mnist")
    flags = (f"--workdir_root={tmp_path / 'runs'}", f"--out={tmp_path / 'results'}",
             "--methods=mnist/fixmatch:tiny", "--num_labels=20", f"--mnist={mnist}")  # fmt: skip
    code, _, err = run_script("few_labels", *flags)
    assert code == 0, err[-3000:]
    results = tmp_path / "results"
    (row,) = json.loads((results / "few_labels.json").read_text())
    assert row["dataset"] == "mnist" and row["method"] == "fixmatch:tiny"
    assert row["num_labels"] == 20 and row["paired_fraction"] is None and row["seeds"] == [0]
    assert 0.0 <= row["test_error"] <= 1.0 and 0.0 <= row["validation_error"] <= 1.0
    assert "--config.data.num_labels=20" in row["command"] and f"path={mnist}" in row["command"]
    assert row["wall_s"] > 0 and row["status"] == "ok"
    assert (results / "few_labels.png").stat().st_size > 0
    table = (results / "few_labels.md").read_text()
    assert "| mnist | fixmatch:tiny | 20 |" in table and row["command"] in table
    # Rerun: the point is in the results, so nothing trains.
    code, out, _ = run_script("few_labels", *flags)
    assert code == 0 and "skipped" in out
    assert json.loads((results / "few_labels.json").read_text()) == [row]
    # Results lost, runs kept: the finished run is read back, not trained again.
    (results / "few_labels.json").unlink()
    code, out, _ = run_script("few_labels", *flags)
    assert code == 0 and "finished before" in out
    reread_row = json.loads((results / "few_labels.json").read_text())[0]
    assert reread_row["test_error"] == row["test_error"]
    assert reread_row["wall_s"] == row["wall_s"]  # the training time, not the reading time


def test_sweep_points_name_their_override_target_and_published_figures():
    methods = few_labels.select_methods(["mnist/fixmatch", "mnist/supervised", "av_mnist/mopoe"])
    rows = few_labels.sweep_rows(methods, num_labels=(100, 600), paired_fractions=(0.1,))
    names = [r.reproduce_row().name for r in rows]
    assert names == [
        "mnist_fixmatch_labels100", "mnist_fixmatch_labels600",
        "mnist_supervised_labels100", "mnist_supervised_labels600", "av_mnist_mopoe_paired0.1",
    ]  # fmt: skip
    fixmatch = rows[0].reproduce_row()
    assert fixmatch.runs[0].overrides == ("--config.data.num_labels=100",)
    assert fixmatch.target == "test error <= 5.0%" and "M1+M2 3.33 %" in fixmatch.published
    assert fixmatch.check({"fixmatch": 0.96}) and not fixmatch.check({"fixmatch": 0.94})
    assert rows[2].reproduce_row().target == "report"
    vae = rows[4].reproduce_row()
    assert vae.runs[0].overrides == ("--config.data.paired_fraction=0.1",)
    assert vae.runs[0].metric == "coherence/audio_to_image" and vae.published == "-"
    commands = few_labels.dry_run_commands(rows[:1], [0, 1], {"mnist": "/d"}, "runs")
    assert len(commands) == 2 and "--config.data.source.path=/d" in commands[0]


def test_bad_methods_and_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown few-labels method 'mnist/nope'"):
        few_labels.select_methods(["mnist/nope"])
    mopoe = few_labels.select_methods(["av_mnist/mopoe"])
    with pytest.raises(ConfigError, match="--paired_fractions"):
        few_labels.sweep_rows(mopoe, num_labels=(100,))
    with pytest.raises(ConfigError, match="paired fraction 1.5"):
        few_labels.sweep_rows(mopoe, paired_fractions=(1.5,))
    with pytest.raises(ConfigError, match="no variant for 50 labels"):
        few_labels.sweep_rows(few_labels.select_methods(["mnist/m2"]), num_labels=(50,))
    with pytest.raises(ConfigError, match="num_labels 0"):
        few_labels.sweep_rows(few_labels.select_methods(None), num_labels=(0,))


def test_table_reports_heads_spread_and_failures():
    rows = [
        {"dataset": "av_mnist", "method": "cotrain", "num_labels": 100, "paired_fraction": None,
         "test_error": 0.1, "test_error_spread": 0.01, "validation_error": 0.12,
         "seeds": [0, 1], "command": "python scripts/train.py x", "wall_s": 5.0,
         "status": "ok", "target": "report", "met": None, "published": "-",
         "test_head_accuracy/image": 0.8, "test_head_accuracy/audio": 0.7},
        {"dataset": "mnist", "method": "m2", "num_labels": 100, "paired_fraction": None,
         "test_error": None, "validation_error": None, "seeds": [0], "command": "c",
         "wall_s": 1.0, "status": "failed", "error": "RuntimeError: x", "target": "t",
         "met": False, "published": "M2 11.97 %"},
    ]  # fmt: skip
    table = few_labels.results_markdown(rows)
    assert "10.00 % ± 1.00 (image head 20.00 %, audio head 30.00 %)" in table
    assert "failed: RuntimeError: x" in table and "M2 11.97 %" in table


@pytest.mark.parametrize("key", list(few_labels.all_methods()))
def test_every_method_names_a_config_that_loads_with_its_sweep_field(key):
    from crossjax.config import load_config_file

    method = few_labels.all_methods()[key]
    config = load_config_file(method.config)
    assert method.sweeps in config.data  # the field the sweep overrides exists
    if method.sweeps == few_labels.NUM_LABELS:
        assert config.data.num_labels is not None  # trained on few labels by default
    for count in method.count_variants:  # e.g. M2's alpha follows the label count
        (row,) = few_labels.sweep_rows([method], num_labels=(count,))
        run = row.reproduce_row().runs[0]
        assert run.config.endswith(str(count)) and load_config_file(run.config)


def test_comparisons_judge_cotraining_and_weak_pairing():
    def row(method, error, labels=100, paired=None):
        return {"dataset": "av_mnist", "method": method, "num_labels": labels,
                "paired_fraction": paired, "test_error": error}  # fmt: skip

    results = [
        row("cotrain", 0.02), row("image_fixmatch", 0.05), row("audio_fixmatch", 0.03),
        row("mopoe", 0.16, None, 0.1), row("mopoe", 0.13, None, 1.0),
    ]  # fmt: skip
    lines = few_labels.comparisons(results)
    assert lines[0].endswith("below both: yes") and "on audio 3.00 %" in lines[0]
    assert lines[1].endswith("within 0.05: yes")
    worse = few_labels.comparisons([*results[1:3], row("cotrain", 0.04)])
    assert worse[0].endswith("below both: no")
    assert few_labels.comparisons(results[:2]) == []  # audio FixMatch missing: no verdict
