"""The persistent XLA compilation cache, on by default: a second run of a config loads its
compiled train and eval steps from disk instead of compiling them again (seconds of
start-up on CPU, minutes for large models on accelerators).

`config.compilation_cache_dir` chooses the folder:
- "auto" (the default): $JAX_COMPILATION_CACHE_DIR where it is set (set but empty: off),
  else one folder per user, $XDG_CACHE_HOME/crossjax/xla or ~/.cache/crossjax/xla. One
  folder for every run of the user, not one per workdir, so a new workdir of a config
  already run starts warm. JAX keys each entry by the program, the jax/jaxlib version,
  the XLA flags and the devices, so runs of other configs or machines never mix.
- a path: that folder (e.g. on a shared file system for multi-host jobs);
- "": off.

Several processes may share the folder (two runs at once, the processes of one multi-host
run). With the `filelock` package (a crossjax dependency) JAX locks the folder for every read and write
and the folder is bounded (`MAX_BYTES`, least recently used entries go first); without it,
a reader that meets an entry another process is half-way through writing fails to
decompress it, and JAX warns and compiles the program itself.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import jax

from crossjax.errors import ConfigError

ENV = "JAX_COMPILATION_CACHE_DIR"
# Cache every program that took this long to compile: the small configs' train steps
# compile in 1-3 s on 2 CPU cores, their eval steps and helpers in a few tenths.
MIN_COMPILE_SECS = 0.2
MAX_BYTES = 4 * 2**30


def default_cache_dir() -> Path:
    """The per-user folder: $XDG_CACHE_HOME/crossjax/xla, else ~/.cache/crossjax/xla."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "crossjax" / "xla"


def resolve_cache_dir(setting: str) -> str:
    """The folder `config.compilation_cache_dir` names ("" when the cache is off)."""
    if not isinstance(setting, str):
        raise ConfigError(
            f"config.compilation_cache_dir={setting!r}; valid: 'auto', a folder, or '' (off)"
        )
    if setting != "auto":
        return os.path.expanduser(setting) if setting else ""
    if ENV in os.environ:
        return os.environ[ENV]
    return str(default_cache_dir())


def enable_compilation_cache(setting: str) -> str:
    """Points JAX's persistent compilation cache at `resolve_cache_dir(setting)` (or turns
    it off) before the run compiles anything; returns the folder ("" when off).

    The thresholds are set only where the user's environment has not set them, so
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS and friends still win."""
    from jax.experimental.compilation_cache import compilation_cache

    path = resolve_cache_dir(setting)
    if path != (jax.config.jax_compilation_cache_dir or ""):
        jax.config.update("jax_compilation_cache_dir", path or None)
        # JAX decides once per process whether the cache is in use: start that over.
        compilation_cache.reset_cache()
    if not path:
        return ""
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    has_lock = importlib.util.find_spec("filelock") is not None
    if has_lock and "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
