"""The device mesh and the shardings of batches and of the train state.

The mesh has a `data` axis over which batches are split and, optionally, a `model` axis
for wide layers. The train state is either replicated (data parallelism) or sharded by
FSDP: every large enough array is split along one of its dimensions over `data`, so
parameters and optimizer state take 1/N of the memory per device; XLA inserts the
gathers. All axes are `Auto`, so models need no sharding annotations.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from crossjax.errors import ConfigError

DATA_AXIS = "data"
MODEL_AXIS = "model"
PARAM_SHARDINGS = ("replicated", "fsdp")


def make_mesh(num_devices: int | None = None, model_parallel: int = 1) -> Mesh:
    """A (data, model) mesh over `num_devices` (default: every device of every process).

    With model_parallel == 1 the mesh is 1-D, axis `data` only.
    """
    available = jax.device_count()
    n = num_devices or available
    if n > available:
        raise ConfigError(f"mesh asks for {n} devices but only {available} are available")
    if model_parallel < 1 or n % model_parallel:
        raise ConfigError(
            f"model_parallel={model_parallel} must divide the {n} devices of the mesh"
        )
    devices = jax.devices()[:n]
    if model_parallel == 1:
        return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)
    return jax.make_mesh(
        (n // model_parallel, model_parallel),
        (DATA_AXIS, MODEL_AXIS),
        axis_types=(AxisType.Auto, AxisType.Auto),
        devices=devices,
    )


def data_size(mesh: Mesh) -> int:
    return mesh.shape[DATA_AXIS]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis (replicated over `model`)."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def array_spec(shape: tuple[int, ...], mesh: Mesh, *, fsdp: bool, min_size: int) -> PartitionSpec:
    """The PartitionSpec of one state array under the size rule.

    - `model` axis (if the mesh has one): the last dimension of a matrix or larger
      (a Dense kernel's output features) when it divides evenly.
    - FSDP: arrays of at least `min_size` elements are split over `data` along their
      largest remaining dimension that divides evenly; smaller ones stay replicated
      (gathering them would cost more than it saves).
    """
    spec: list[str | None] = [None] * len(shape)
    if MODEL_AXIS in mesh.shape and len(shape) >= 2 and shape[-1] % mesh.shape[MODEL_AXIS] == 0:
        spec[-1] = MODEL_AXIS
    if fsdp and math.prod(shape) >= min_size:
        n = data_size(mesh)
        free = [i for i in range(len(shape)) if spec[i] is None and shape[i] % n == 0]
        if free:
            spec[max(free, key=lambda i: shape[i])] = DATA_AXIS
    return PartitionSpec(*spec)


def state_shardings(
    abstract_state, mesh: Mesh, *, param_sharding: str = "replicated", min_size: int = 2**14
):
    """NamedShardings for every leaf of `abstract_state` (a pytree of ShapeDtypeStructs)."""
    if param_sharding not in PARAM_SHARDINGS:
        raise ConfigError(f"param_sharding={param_sharding!r}; valid: {', '.join(PARAM_SHARDINGS)}")
    fsdp = param_sharding == "fsdp"
    return jax.tree.map(
        lambda s: NamedSharding(
            mesh, array_spec(tuple(s.shape), mesh, fsdp=fsdp, min_size=min_size)
        ),
        abstract_state,
    )


def check_batch_size(batch_size: int, mesh: Mesh, grad_accum_steps: int = 1) -> None:
    """Raises ConfigError unless each (micro-)batch splits evenly over the data axis and processes."""
    n = data_size(mesh)
    micro = batch_size // grad_accum_steps
    if batch_size % grad_accum_steps or micro % n or batch_size % jax.process_count():
        raise ConfigError(
            f"batch_size={batch_size} / grad_accum_steps={grad_accum_steps} must be a multiple of "
            f"the data-parallel device count ({n}), and batch_size of the process count "
            f"({jax.process_count()})"
        )


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays sharded over `data` from this process's share of the batch."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def to_host(array: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-process) global array as numpy, on every process."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(array))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """`jax.distributed.initialize` with explicit settings, or JAX's auto-detection
    (SLURM, TPU pods, ...) when all three are None. Call before any other JAX work."""
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
