"""crossjax's XLA:CPU option is set at import on the CPUs it was measured to help (AMD),
appended to the user's XLA_FLAGS, and left alone when the user set it, opted out, runs
another CPU (in "auto") or a jaxlib it was not measured with."""

import importlib.metadata
import os

import pytest

import crossjax


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("CROSSJAX_XLA_CPU_TUNING", raising=False)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.10.2")
    monkeypatch.setattr(crossjax, "cpu_vendor", lambda: "AuthenticAMD")
    return monkeypatch


def test_this_session_follows_its_cpu():
    # conftest set XLA_FLAGS before importing crossjax, which appended its option on AMD.
    flags = os.environ["XLA_FLAGS"].split()
    amd = crossjax.cpu_vendor() == "AuthenticAMD"
    assert (crossjax.XLA_CPU_FLAGS in flags) == (
        amd and os.environ.get("CROSSJAX_XLA_CPU_TUNING", "auto") in ("auto", "")
    ), flags
    assert "--xla_force_host_platform_device_count=8" in flags


def test_cpu_vendor_reads_proc_cpuinfo():
    vendor = crossjax.cpu_vendor()
    if os.path.exists("/proc/cpuinfo") and "vendor_id" in open("/proc/cpuinfo").read():
        assert vendor and vendor in open("/proc/cpuinfo").read()
    else:
        assert vendor == ""


def test_appended_to_existing_flags_on_amd(env):
    env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    crossjax._tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == (
        f"--xla_force_host_platform_device_count=2 {crossjax.XLA_CPU_FLAGS}"
    )
    crossjax._tune_xla_cpu()  # idempotent
    assert os.environ["XLA_FLAGS"].count("ynn_fusion_type") == 1


@pytest.mark.parametrize("vendor", ["GenuineIntel", "", "HygonGenuine"])
def test_auto_keeps_xla_default_elsewhere(env, vendor):
    env.setattr(crossjax, "cpu_vendor", lambda: vendor)
    env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    crossjax._tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    env.setenv("CROSSJAX_XLA_CPU_TUNING", "off")  # forced on any CPU
    crossjax._tune_xla_cpu()
    assert os.environ["XLA_FLAGS"].split()[-1] == crossjax.XLA_CPU_FLAGS


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


def test_one_means_auto(env):
    env.setenv("CROSSJAX_XLA_CPU_TUNING", "1")
    env.setattr(crossjax, "cpu_vendor", lambda: "GenuineIntel")
    env.setenv("XLA_FLAGS", "")
    crossjax._tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == ""
    env.setattr(crossjax, "cpu_vendor", lambda: "AuthenticAMD")
    crossjax._tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == crossjax.XLA_CPU_FLAGS


def test_bad_setting_names_the_valid_ones(env):
    env.setenv("CROSSJAX_XLA_CPU_TUNING", "fast")
    with pytest.raises(ValueError, match="CROSSJAX_XLA_CPU_TUNING='fast'; valid: auto"):
        crossjax._tune_xla_cpu()
