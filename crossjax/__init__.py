"""crossjax: cross-modal learning in JAX (Flax linen, Optax, Orbax, TFDS, Grain)."""

import importlib.metadata as _metadata
import os as _os
import time as _time

# When crossjax was first imported: the trainer's start-up log counts its "imports" phase
# (JAX, Flax, Optax, Orbax, TFDS, Grain and the flags) from here.
IMPORTED_AT = _time.perf_counter()

__version__ = "0.1.0"

# XLA:CPU in jaxlib 0.10 hands reductions (a loss value, a bias gradient) to its
# experimental YNNPACK fusions. Whether that is faster depends on the CPU (whole
# training steps, both settings; benchmarks/xla_cpu_tuning.py measures a machine):
# - on AMD EPYC (2 cores) a YNNPACK sum cost up to ~1 ms, more than the rest of a small
#   step: the MLP VAE ran 300 -> 419 steps/s and the CNN 26.9 -> 38.0 with them off;
# - on Intel Xeon with AVX-512 (2 cores) XLA's own reduction loops are the slow ones (a
#   bias gradient of the two tower took 3 ms): with YNNPACK's the CNN runs 1.2x, the
#   transformer two tower 1.6x and the captioner 1.1x faster; the VAE 4 % slower.
# So by default ("auto") crossjax turns them off on AMD CPUs only and keeps XLA's default
# elsewhere. CROSSJAX_XLA_CPU_TUNING=off always turns them off, =0 never touches XLA_FLAGS.
# XLA_FLAGS is read when JAX first creates its backends, so this must run before anything
# computes; it only touches CPU compilation. It is also skipped when XLA_FLAGS already
# sets the option and for other jaxlib versions (an unknown flag would abort XLA).
XLA_CPU_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
XLA_CPU_TUNING_VALUES = ("auto", "off", "0")


def cpu_vendor() -> str:
    """The CPU's vendor_id from /proc/cpuinfo (e.g. "AuthenticAMD", "GenuineIntel"), ""
    where there is no such file (macOS, Windows) or field (ARM)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _tune_xla_cpu() -> None:
    flags = _os.environ.get("XLA_FLAGS", "")
    tuning = _os.environ.get("CROSSJAX_XLA_CPU_TUNING", "auto").strip().lower() or "auto"
    tuning = "auto" if tuning == "1" else tuning  # "1" (on) before "auto" existed
    if tuning not in XLA_CPU_TUNING_VALUES:
        raise ValueError(
            f"CROSSJAX_XLA_CPU_TUNING={tuning!r}; valid: auto (YNNPACK reductions off on AMD "
            "CPUs only), off (always off) or 0 (leave XLA_FLAGS alone)"
        )
    if tuning == "0" or (tuning == "auto" and cpu_vendor() != "AuthenticAMD"):
        return
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return
    try:
        jaxlib_version = _metadata.version("jaxlib")
    except _metadata.PackageNotFoundError:
        return
    if not jaxlib_version.startswith("0.10."):
        return
    _os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAGS}".strip()


_tune_xla_cpu()
