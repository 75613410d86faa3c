"""Test session set-up: 8 fake CPU devices so sharding is exercised on one machine."""

import os

# Must run before anything imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
