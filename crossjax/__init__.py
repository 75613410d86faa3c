"""crossjax: cross-modal learning in JAX (Flax linen, Optax, Orbax, TFDS, Grain)."""

import importlib.metadata as _metadata
import os as _os
import time as _time

# When crossjax was first imported: the trainer's start-up log counts its "imports" phase
# (JAX, Flax, Optax, Orbax, TFDS, Grain and the flags) from here.
IMPORTED_AT = _time.perf_counter()

__version__ = "0.1.0"

# XLA:CPU in jaxlib 0.10 hands reductions to its experimental YNNPACK fusions. A sum to a
# scalar (a loss value) or over the batch (a bias gradient) then costs up to ~1 ms at
# our sizes, more than the rest of a small step: measured on 2 cores, the MLP VAE step of
# benchmarks/compare_torch.py runs 300 -> 419 steps/s and the CNN step 26.9 -> 38.0
# without it. XLA_FLAGS is read when JAX first creates its backends, so this must run
# before anything computes; it only touches CPU compilation. It is skipped when XLA_FLAGS
# already sets the option, when CROSSJAX_XLA_CPU_TUNING=0, and for other jaxlib
# versions (an unknown flag would abort XLA).
XLA_CPU_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-reduce"


def _tune_xla_cpu() -> None:
    flags = _os.environ.get("XLA_FLAGS", "")
    if _os.environ.get("CROSSJAX_XLA_CPU_TUNING", "1") == "0":
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
