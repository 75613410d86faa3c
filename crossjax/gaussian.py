"""Diagonal-Gaussian densities shared by the VAE losses and the multimodal VAE's posterior
math (a leaf module: `crossjax.losses` and `crossjax.models` both import it)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z | mean, diag(exp(logvar))), summed over the last axis, in float32:
    (..., Z) -> (...). mean and logvar broadcast against z (0.0 for N(0, I))."""
    z, mean, logvar = (jnp.asarray(a, jnp.float32) for a in (z, mean, logvar))
    return -0.5 * jnp.sum(_LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1)
