"""crossjax's XLA:CPU option is set at import, appended to the user's XLA_FLAGS, and left
alone when the user set it, opted out, or runs a jaxlib it was not measured with."""

import importlib.metadata
import os

import pytest

import crossjax


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("CROSSJAX_XLA_CPU_TUNING", raising=False)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.10.2")
    return monkeypatch


def test_this_session_runs_with_the_flag():
    # conftest set XLA_FLAGS before importing crossjax, which appended its option.
    assert crossjax.XLA_CPU_FLAGS in os.environ["XLA_FLAGS"].split()
    assert "--xla_force_host_platform_device_count=8" in os.environ["XLA_FLAGS"].split()


def test_appended_to_existing_flags(env):
    env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    crossjax._tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == (
        f"--xla_force_host_platform_device_count=2 {crossjax.XLA_CPU_FLAGS}"
    )
    crossjax._tune_xla_cpu()  # idempotent
    assert os.environ["XLA_FLAGS"].count("ynn_fusion_type") == 1


@pytest.mark.parametrize(
    "setting",
    [
        {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"},  # user's choice
        {"XLA_FLAGS": "", "CROSSJAX_XLA_CPU_TUNING": "0"},  # opted out
    ],
)
def test_left_alone(env, setting):
    for key, value in setting.items():
        env.setenv(key, value)
    crossjax._tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == setting["XLA_FLAGS"]


def test_skipped_for_an_unmeasured_jaxlib(env):
    env.setenv("XLA_FLAGS", "")
    env.setattr(importlib.metadata, "version", lambda name: "0.11.0")
    crossjax._tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == ""
