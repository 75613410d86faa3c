"""Measures how fast a config trains: compile time, step time, FLOPs, MFU, input speed.

Used by scripts/benchmark.py; every figure comes from timing on this machine, never
from a table. Step times are wall-clock per step with `block_until_ready`, so they
include dispatch but not input (the batches are already on the device); the input
pipeline is timed on its own and compared with the step rate.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import crossjax
from crossjax import sharding
from crossjax.train import Experiment, make_mesh, open_data


def cpu_info() -> dict:
    """This machine's CPU as benchmarks record it: vendor, model name, CPU count, whether
    it has AVX-512 and AMX, and the XLA:CPU setting crossjax chose for it (speed ratios
    differ between CPUs of the same cloud instance type; see crossjax/__init__.py)."""
    info = {
        "vendor": crossjax.cpu_vendor(),
        "cpus": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model"] = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            info["avx512f"], info["amx_bf16"] = "avx512f" in flags, "amx_bf16" in flags
            break
    return info


def measure_peak_flops(dtype=jnp.float32, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul in `dtype` on the default device (best of repeats)."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _synthetic(batch: dict[str, np.ndarray], spec, seed: int = 0) -> dict[str, np.ndarray]:
    """Random values shaped like `batch` (ids within the vocabulary, labels within classes)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in batch.items():
        if k == "text":
            out[k] = rng.integers(2, spec.vocab_size, v.shape).astype(v.dtype)
        elif k == "label":
            out[k] = rng.integers(0, spec.num_classes or 2, v.shape).astype(v.dtype)
        elif v.dtype == bool:
            out[k] = np.ones(v.shape, bool)
        else:
            out[k] = rng.random(v.shape, np.float32).astype(v.dtype)
    return out


def _experiment(config: ml_collections.ConfigDict, workdir: str | Path):
    """(experiment, data, mesh) of `config`, its data opened with `workdir` for the
    vocabulary (created if missing): the set-up every measurement here shares."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(config)
    data = open_data(config, workdir)
    return Experiment(config, data, mesh), data, mesh


def benchmark(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    steps: int = 50,
    warmup: int = 5,
    synthetic: bool = False,
    input_batches: int = 50,
) -> dict[str, float | bool | str]:
    """Times the jitted train step of `config`; returns the figures as a flat dict."""
    exp, data, mesh = _experiment(config, workdir)
    it = data.train_iterator()
    first = next(it)
    host_batches = (
        [_synthetic(first, data.spec, i) for i in range(4)] if synthetic else [first, next(it)]
    )
    batches = [sharding.to_global(b, mesh) for b in host_batches]
    state, acc = exp.init(), exp.empty_train_metrics()

    start = time.perf_counter()
    compiled = exp.train_step.lower(state, batches[0], acc).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", float("nan")))

    for i in range(warmup):
        state, acc = compiled(state, batches[i % len(batches)], acc)
    jax.block_until_ready(acc)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, acc = compiled(state, batches[i % len(batches)], acc)
        jax.block_until_ready(acc)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)

    t0 = time.perf_counter()
    for _ in range(input_batches):
        jax.block_until_ready(sharding.to_global(next(it), mesh))
    input_examples_per_s = input_batches * config.batch_size / (time.perf_counter() - t0)

    dtype = jnp.bfloat16 if str(config.model.get("dtype", "float32")) == "bfloat16" else jnp.float32
    peak = measure_peak_flops(dtype) * len(mesh.devices.flat)
    examples_per_s = config.batch_size / step_s
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
    return {
        "backend": jax.default_backend(),
        "devices": len(mesh.devices.flat),
        "batch_size": config.batch_size,
        "compile_s": compile_s,
        "step_ms_median": 1e3 * step_s,
        "step_ms_p90": 1e3 * float(np.percentile(times, 90)),
        "steps_per_s": 1.0 / step_s,
        "examples_per_s": examples_per_s,
        "flops_per_step": flops,
        "achieved_flops_per_s": flops / step_s,
        "peak_flops": peak,
        "peak_flops_source": f"measured {dtype.dtype.name if hasattr(dtype, 'dtype') else np.dtype(dtype).name} matmul",
        "mfu": flops / step_s / peak,
        "peak_memory_bytes": float(stats.get("peak_bytes_in_use", float("nan"))),
        "input_examples_per_s": input_examples_per_s,
        "input_bound": bool(input_examples_per_s < examples_per_s),
        "synthetic": synthetic,
    }


def bare_loop_steps_per_s(
    config: ml_collections.ConfigDict, workdir: str | Path, steps: int
) -> float:
    """Steps/s of a bare Python loop over the trainer's jitted train step, fed what the
    trainer feeds it: global batches of the run's pipeline (with the default device cache,
    gathered on the devices from device-resident arrays), 8 of them fetched up front and
    cycled. The reference for the trainer's overhead: no iterator, logging,
    checkpointing or progress bar."""
    exp, data, mesh = _experiment(config, workdir)
    it = data.global_train_batches(mesh)
    batches = [next(it) for _ in range(8)]
    state, acc = exp.init(), exp.empty_train_metrics()
    state, acc = exp.train_step(state, batches[0], acc)
    jax.block_until_ready(acc)
    start = time.perf_counter()
    for i in range(steps):
        state, acc = exp.train_step(state, batches[i % len(batches)], acc)
    jax.block_until_ready(acc)
    return steps / (time.perf_counter() - start)


def trainer_overhead(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Steps/s of `train_and_evaluate` (the config's log and checkpoint intervals, no
    periodic eval) against a bare loop of the same jitted step on the same
    device-resident data (`bare_loop_steps_per_s`).

    The trainer's rate is taken from its own log records after the first one (which
    includes compilation): total steps over total time of those intervals. The bare loop
    runs before and after the trainer and the mean of the two is the reference, so a
    machine whose speed drifts during the measurement does not favour either side.
    """
    import json

    from crossjax.train import train_and_evaluate

    workdir = Path(workdir)
    config = config.copy_and_resolve_references()
    config.eval_every = 0
    steps_hint = max(config.num_train_steps - config.log_every, 1)
    bare_before = bare_loop_steps_per_s(config, workdir / "bare", steps_hint)
    train_and_evaluate(config, str(workdir / "trainer"))
    with open(workdir / "trainer" / "metrics.jsonl") as f:
        records = [r for r in map(json.loads, f) if r["split"] == "train"]
    steps = [b["step"] - a["step"] for a, b in zip(records, records[1:], strict=False)]
    seconds = [n / r["steps_per_s"] for n, r in zip(steps, records[1:], strict=True)]
    trainer = sum(steps) / sum(seconds)
    bare_after = bare_loop_steps_per_s(config, workdir / "bare", sum(steps))
    bare = (bare_before + bare_after) / 2
    return {
        "trainer_steps_per_s": trainer,
        "bare_loop_steps_per_s": bare,
        "bare_loop_before_after": [bare_before, bare_after],
        "ratio": trainer / bare,
    }


def compile_seconds(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Cold compile seconds of `config`'s jitted programs: {"init", "train_step",
    "eval_step"} wall-clock and the same with a "_cpu" suffix in CPU seconds of this
    process (less sensitive to other processes on the machine), each `compile` of a
    `lower` from abstract shapes (nothing runs) with the persistent compilation cache
    off, so every figure is a real compilation."""
    from crossjax.compilation_cache import enable_compilation_cache

    enable_compilation_cache("")
    exp, data, mesh = _experiment(config, workdir)
    state = exp.abstract_state()
    acc = exp.empty_train_metrics()
    eval_batch = sharding.to_global(next(iter(data.eval_batches(split="validation"))), mesh)
    eval_acc = exp._empty_eval_acc(state.params, eval_batch, state.model_state)
    step = jnp.zeros((), jnp.int32)

    out = {}

    def timed(name: str, lowered) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        lowered.compile()
        out[name] = time.perf_counter() - start
        out[f"{name}_cpu"] = time.process_time() - cpu

    timed("init", exp.init.lower())
    timed("train_step", exp.train_step.lower(state, exp._abstract_batch(), acc))
    timed(
        "eval_step",
        exp.eval_step.lower(state.params, eval_batch, eval_acc, step, state.model_state),
    )
    return out
