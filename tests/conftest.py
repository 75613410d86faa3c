"""Test session set-up: 8 fake CPU devices so sharding is exercised on one machine, one
shared data directory so the tiny embedded datasets are generated once per session, and
one XLA compilation cache per test worker so a program compiled by one test (the tiny
configs' train and eval steps) is not compiled again by the next."""

import contextlib
import io
import logging
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

# Must run before anything imports jax.
# Compiling dominates the suite's time. XLA:CPU at LLVM -O0 with the classic (non-MLIR)
# fusion emitters compiles a tiny config's programs in about half the time (measured with
# the tiny fusion, CLIP, VAE and sequence-autoencoder configs: 58 s -> 32 s of CPU); the
# programs compute the same values, only slower, which tiny tests do not notice. One LLVM
# module per program instead of several compiled on parallel threads: the test workers
# already keep every core busy, and the split costs about 10% more compile time (init and
# train step of four tiny configs, 7 alternating pairs: 10.8 -> 9.7 s of compile, 22.1 ->
# 19.6 s of CPU). Runs outside the tests keep XLA's defaults.
TEST_XLA_FLAGS = (
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
    "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
)
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CROSSJAX_DATA_DIR", tempfile.mkdtemp(prefix="crossjax-test-data-"))
# Compiling dominates the suite's time; the cache starts empty each session (a fresh clone's
# `make test` pays every first compilation). One folder for the session, made by the
# process that starts pytest: its xdist workers and the tests' subprocesses inherit it,
# so a program one worker compiled is loaded by the other. A size bound makes JAX lock the
# folder (filelock) for every read and write, as crossjax.compilation_cache does for runs,
# so no worker reads an entry the other is half-way through writing.
_SESSION_CACHE = "CROSSJAX_TEST_XLA_CACHE"
_OWNS_CACHE = _SESSION_CACHE not in os.environ
if _OWNS_CACHE:
    os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix="crossjax-test-xla-")
_XLA_CACHE = os.environ[_SESSION_CACHE]
os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
# crossjax.compilation_cache.MAX_BYTES (that module imports jax, which reads these at import).
os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(4 * 2**30)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def xla_flags(devices: int) -> str:
    """This session's XLA_FLAGS with `devices` fake CPU devices, for subprocesses."""
    flags = os.environ.get("XLA_FLAGS", TEST_XLA_FLAGS)
    return re.sub(r"device_count=\d+", f"device_count={devices}", flags)


_JITTED_APPLY: dict[int, tuple] = {}


def jit_apply(model):
    """`model.apply` compiled as one program per model and keyword set (the keywords other
    than `rngs` are static). A model run op by op compiles each of its operations as a
    program of its own, a few hundred per test; this compiles it once. The model is kept
    alive with its function, so its id is never reused."""
    import jax

    if id(model) not in _JITTED_APPLY:
        static = ("train", "method", "sources", "targets", "sample", "beam_size", "mutable")
        _JITTED_APPLY[id(model)] = (model, jax.jit(model.apply, static_argnames=static))
    return _JITTED_APPLY[id(model)][1]


@pytest.fixture(scope="session", autouse=True)
def _quiet_tfds():
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()


def run_script_here(script: str, *args: str) -> int:
    """Runs `python scripts/<script>.py *args` from the repository root in this process and
    returns its exit code: the script's flag parsing, `cli.run` and exit code, without a
    new interpreter importing JAX again (seconds per call). The working directory,
    `sys.argv`, `sys.path`, the flags the script defines and the logging set-up of absl are
    undone afterwards, so scripts run one after another (or one inside another, as
    scripts/reproduce.py runs scripts/train.py). Output goes to sys.stdout/sys.stderr."""
    from absl import flags
    from absl import logging as absl_logging

    cwd, argv, path = os.getcwd(), sys.argv, list(sys.path)
    os.chdir(ROOT)
    sys.argv = [f"scripts/{script}.py", *args]
    defined = set(flags.FLAGS)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    verbosity = absl_logging.get_verbosity()
    try:
        runpy.run_path(f"scripts/{script}.py", run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        # The script's own flags (and its config's `--config.*` fields); flags a library
        # defined on first import (grain's) stay, as they would in a process.
        own = set(flags.FLAGS.flags_by_module_dict().get(sys.argv[0], ()))
        own = {f.name for f in own}
        for name in set(flags.FLAGS) - defined:
            if name.split(".")[0] in own:
                delattr(flags.FLAGS, name)
        root.handlers[:] = handlers
        root.setLevel(level)
        absl_logging.set_verbosity(verbosity)
        os.chdir(cwd)
        sys.argv, sys.path[:] = argv, path  # the script prepends the root
    return code


@pytest.fixture
def run_script(capsys):
    """`run_script_here` returning (exit code, stdout, stderr)."""

    def run(script: str, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run_script_here(script, *args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _python_in_process(command, *, cwd, stdout, stderr, text):
    """`subprocess.run([python, "scripts/x.py", *args], ...)` as crossjax.reproduce calls
    it, run in this process (`run_script_here`): the same command line, exit code, stdout
    and log, without importing JAX again for every training run."""
    interpreter, script, *args = command
    assert interpreter == sys.executable and Path(cwd) == ROOT and stdout == subprocess.PIPE
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(stderr):
        code = run_script_here(Path(script).stem, *args)
    return subprocess.CompletedProcess(command, code, out.getvalue())


@pytest.fixture
def commands_in_process(monkeypatch):
    """The training and evaluation commands of crossjax.reproduce (scripts/reproduce.py,
    scripts/few_labels.py) run in this process for the test; a script run in a real
    subprocess still starts real ones."""
    from crossjax import reproduce

    in_process = types.SimpleNamespace(run=_python_in_process, PIPE=subprocess.PIPE)
    monkeypatch.setattr(reproduce, "subprocess", in_process)


# The test files that take longest, slowest first (measured per file on 2 cores, then
# re-ranked by the durations of a whole `make test` run). They run first, and the rest
# (new files too) in name order after them, so that with `-n 3 --dist loadfile
# --no-loadscope-reorder` (`make test`) no long file starts last and leaves one worker
# running alone at the end.
SLOWEST_FILES = (
    "test_training_modes.py",
    "test_multimodal_vae.py",
    "test_reproduce.py",
    "test_loss_contract.py",
    "test_train.py",
    "test_modality_encoders.py",
    "test_av_digits.py",
    "test_rnn.py",
    "test_startup.py",
    "test_label_modality.py",
    "test_scaling.py",
    "test_vae.py",
    "test_cli.py",
    "test_multiprocess.py",
    "test_fusion_zoo.py",
    "test_benchmark.py",
    "test_batch_stats.py",
    "test_contrastive.py",
    "test_consistency.py",
    "test_few_labels.py",
    "test_m2.py",
    "test_reruns.py",
    "test_files_recipes.py",
    "test_real_data.py",
    "test_bad_inputs.py",
    "test_conv.py",
    "test_pretrained.py",
    "test_tokenizers.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


def pytest_unconfigure(config):
    if _OWNS_CACHE:
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)
