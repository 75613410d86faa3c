"""The device mesh and the shardings of batches and parameters.

One data axis over every device of every process. Batches are split along it; the
train state is replicated (data parallelism).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from crossjax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named `data` over `num_devices` (default: all devices of all processes)."""
    available = jax.device_count()
    n = num_devices or available
    if n > available:
        raise ConfigError(f"mesh asks for {n} devices but only {available} are available")
    # Auto axes: XLA propagates shardings through the model, so modules need no annotations.
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises ConfigError unless the global batch splits evenly over devices and processes."""
    devices = mesh.devices.size
    if batch_size % devices or batch_size % jax.process_count():
        raise ConfigError(
            f"batch_size={batch_size} must be a multiple of the device count ({devices}) "
            f"and process count ({jax.process_count()})"
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
