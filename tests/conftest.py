"""Test session set-up: 8 fake CPU devices so sharding is exercised on one machine, and
one shared data directory so the tiny embedded datasets are generated once per session."""

import os
import tempfile

# Must run before anything imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CROSSJAX_DATA_DIR", tempfile.mkdtemp(prefix="crossjax-test-data-"))

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _quiet_tfds():
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
