"""Start-up cost: the persistent compilation cache (on by default, off with ""), the
one-line start-up log, the train split decoded once while the data opens, and the
compile-time table of benchmarks/compile_times.py."""

import json
import logging
import os

import jax
import pytest

from configs import digits_vae
from crossjax import compilation_cache as cc
from crossjax.data import pipeline
from crossjax.errors import ConfigError
from crossjax.train import train_and_evaluate


@pytest.fixture
def restore_cache():
    """Puts the session's cache (conftest's $JAX_COMPILATION_CACHE_DIR) back afterwards."""
    yield
    cc.enable_compilation_cache("auto")


def test_auto_is_the_environments_folder_else_the_users(monkeypatch, tmp_path):
    monkeypatch.setenv(cc.ENV, str(tmp_path / "env"))
    assert cc.resolve_cache_dir("auto") == str(tmp_path / "env")
    monkeypatch.setenv(cc.ENV, "")  # set but empty: off
    assert cc.resolve_cache_dir("auto") == ""
    monkeypatch.delenv(cc.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cc.resolve_cache_dir("auto") == str(tmp_path / "xdg" / "crossjax" / "xla")
    assert cc.resolve_cache_dir("") == ""
    assert cc.resolve_cache_dir(str(tmp_path / "mine")) == str(tmp_path / "mine")
    with pytest.raises(ConfigError, match="compilation_cache_dir"):
        cc.resolve_cache_dir(None)


def test_enable_sets_jax_and_empty_turns_it_off(tmp_path, restore_cache):
    assert cc.enable_compilation_cache(str(tmp_path / "xla")) == str(tmp_path / "xla")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    assert cc.enable_compilation_cache("") == ""
    assert not jax.config.jax_compilation_cache_dir


def _tiny_vae(cache_dir: str):
    config = digits_vae.get_config("tiny")
    config.compilation_cache_dir = cache_dir
    return config


def test_a_second_run_loads_its_steps_from_the_cache_and_logs_start_up(
    tmp_path, caplog, restore_cache
):
    cache = tmp_path / "xla"
    hits = []

    def listener(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    jax.monitoring.register_event_listener(listener)
    min_secs = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # tiny programs too
    try:
        with caplog.at_level(logging.INFO, logger="crossjax.train"):
            train_and_evaluate(_tiny_vae(str(cache)), str(tmp_path / "first"))
        entries = set(os.listdir(cache))
        assert entries, "the first run wrote no cache entry"
        first_hits = len(hits)
        train_and_evaluate(_tiny_vae(str(cache)), str(tmp_path / "second"))
        # The second run compiled nothing new (init, train and eval steps all hit).
        assert set(os.listdir(cache)) == entries
        assert len(hits) - first_hits >= 3
        # Off: nothing read from or written to any cache.
        off_hits = len(hits)
        train_and_evaluate(_tiny_vae(""), str(tmp_path / "off"))
        assert len(hits) == off_hits and set(os.listdir(cache)) == entries
    finally:
        jax.monitoring.clear_event_listeners()
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_secs)
    lines = [r.getMessage() for r in caplog.records if "start-up:" in r.getMessage()]
    assert len(lines) >= 1
    for phase in ("data", "init", "train data", "compile"):
        assert f" {phase} " in lines[0]
    assert f"compilation cache {cache}" in lines[0]


def test_opening_the_data_decodes_each_train_example_once(monkeypatch, tmp_path):
    """Labels (to stratify the hold-out), source groups (held out together) and the word
    vocabulary all come from one pass over the train split."""
    reads = {}
    load = pipeline.load_split_sources

    class Counting:
        def __init__(self, split, source):
            self.split, self.source = split, source

        def __len__(self):
            return len(self.source)

        def __getitem__(self, i):
            reads[self.split] = reads.get(self.split, 0) + 1
            return self.source[i]

    def counting_load(*args, **kwargs):
        sources, info = load(*args, **kwargs)
        return {k: Counting(k, v) for k, v in sources.items()}, info

    monkeypatch.setattr(pipeline, "load_split_sources", counting_load)
    config = digits_vae.get_config("tiny")
    config.data.modalities = ("image", "text")  # a vocabulary to build
    data = pipeline.DataPipeline(
        config.data, batch_size=16, seed=0, vocab_path=tmp_path / "vocab.json"
    )
    assert data.vocab is not None and data.num_examples["validation"] > 0
    n_train = len(data.sources["train"])
    # One decode per example, plus one more example that describes the data's shapes
    # (each of the three uses read the whole split before).
    assert n_train <= reads["train"] <= n_train + 1


def test_compile_times_table_of_a_tiny_config(tmp_path, restore_cache):
    from benchmarks import compile_times

    assert {"digits_fusion", "digits_vae", "mnist_vae"} <= set(compile_times.readme_configs())
    assert compile_times.real_data_overrides("digits_vae:tiny", None) == {}
    assert compile_times.real_data_overrides("svhn", tmp_path) is None
    assert compile_times.real_data_overrides("mnist_vae", tmp_path) is None  # no copy there
    (tmp_path / "mnist").mkdir()
    assert compile_times.real_data_overrides("mnist_vae", tmp_path) == {
        "data.source.path": str(tmp_path / "mnist")
    }
    out_json, out_md = tmp_path / "t.json", tmp_path / "t.md"
    code = compile_times.main(
        [
            "--configs=digits_vae:tiny,svhn",
            f"--json={out_json}",
            f"--markdown={out_md}",
            f"--workdir={tmp_path / 'work'}",
        ]
    )
    assert code == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert rows[0]["config"] == "digits_vae:tiny"
    for key in ("init", "train_step", "eval_step", "train_step_cpu"):
        assert rows[0][key] > 0
    assert "skipped" in rows[1]
    lines = out_md.read_text().splitlines()
    assert lines[2].startswith("| digits_vae:tiny | embedded |")
    assert "not measured" in lines[3]
    slow = compile_times.table([{**rows[0], "train_step": 6.0}])
    assert "**6.00**" in slow
