"""Test session set-up: 8 fake CPU devices so sharding is exercised on one machine, one
shared data directory so the tiny embedded datasets are generated once per session, and
one XLA compilation cache per test worker so a program compiled by one test (the tiny
configs' train and eval steps) is not compiled again by the next."""

import os
import re
import shutil
import tempfile

# Must run before anything imports jax.
# Compiling dominates the suite's time. XLA:CPU at LLVM -O0 with the classic (non-MLIR)
# fusion emitters compiles a tiny config's programs in about half the time (measured with
# the tiny fusion, CLIP, VAE and sequence-autoencoder configs: 58 s -> 32 s of CPU); the
# programs compute the same values, only slower, which tiny tests do not notice. Runs
# outside the tests keep XLA's defaults.
TEST_XLA_FLAGS = (
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
    "--xla_cpu_use_fusion_emitters=false"
)
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CROSSJAX_DATA_DIR", tempfile.mkdtemp(prefix="crossjax-test-data-"))
# Compiling dominates the suite's time; the cache starts empty each session (a fresh clone's
# `make test` pays every first compilation) and subprocesses of the tests inherit it. One
# folder per xdist worker: JAX writes entries without a lock, so two workers sharing one
# could read an entry the other is half-way through writing.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
_XLA_CACHE = tempfile.mkdtemp(prefix=f"crossjax-test-xla-{_worker}-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402


def xla_flags(devices: int) -> str:
    """This session's XLA_FLAGS with `devices` fake CPU devices, for subprocesses."""
    flags = os.environ.get("XLA_FLAGS", TEST_XLA_FLAGS)
    return re.sub(r"device_count=\d+", f"device_count={devices}", flags)


@pytest.fixture(scope="session", autouse=True)
def _quiet_tfds():
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()


def pytest_unconfigure(config):
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)
