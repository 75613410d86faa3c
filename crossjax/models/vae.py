"""Single-modality autoencoders with MLP encoder and decoder on the flattened input.

`recon/<modality>` has the input's shape and holds the decoder's raw output: the loss
decides how to read it (Bernoulli logits with `likelihood="bernoulli"`, the Gaussian
mean with `likelihood="gaussian"`; see `crossjax.losses.generative`).
`recon_mean/<modality>` is the mean of p(x | z) under the model's `likelihood` field
(sigmoid of the logits for Bernoulli): the values to look at, e.g. in pictures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models import (
    MODELS,
    int_tuple,
    parse_dtype,
    positive_int,
    read_fields,
    require_modalities,
)
from crossjax.models.encoders import MLP

# Continuous modalities an MLP autoencoder can reconstruct, and the DataSpec field
# holding each one's per-example shape.
VAE_MODALITIES = {"image": "image_shape", "audio": "audio_shape"}
LIKELIHOODS = ("bernoulli", "gaussian")


def _reconstructions(modality: str, likelihood: str, raw: jax.Array) -> dict[str, jax.Array]:
    mean = jax.nn.sigmoid(raw) if likelihood == "bernoulli" else raw
    return {f"recon/{modality}": raw, f"recon_mean/{modality}": mean}


class _MLPDecoder(nn.Module):
    """z (B, Z) -> (B, *output_shape): MLP over `hidden` then a Dense to prod(output_shape)."""

    hidden: Sequence[int]
    output_shape: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        size = math.prod(self.output_shape)
        x = MLP((*self.hidden, size), dtype=self.dtype)(z.astype(self.dtype))
        return x.reshape((z.shape[0], *self.output_shape)).astype(jnp.float32)


class Autoencoder(nn.Module):
    """Deterministic autoencoder of `batch[modality]` (B, *output_shape).

    Outputs: `z` (B, latent_dim), `recon/<modality>` and `recon_mean/<modality>`
    (B, *output_shape) float32.
    """

    output_shape: Sequence[int]
    modality: str = "image"
    hidden: Sequence[int] = (256,)
    latent_dim: int = 16
    likelihood: str = "bernoulli"
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.encoder = MLP((*self.hidden, self.latent_dim), dtype=self.dtype)
        self.decoder = _MLPDecoder(tuple(reversed(self.hidden)), self.output_shape, self.dtype)

    def encode(self, x: jax.Array) -> jax.Array:
        """x (B, *output_shape) -> z (B, latent_dim) float32."""
        flat = x.reshape(x.shape[0], -1).astype(self.dtype)
        return self.encoder(flat).astype(jnp.float32)

    def decode(self, z: jax.Array) -> jax.Array:
        """z (B, latent_dim) -> decoder output (B, *output_shape)."""
        return self.decoder(z)

    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        x = batch[self.modality]
        chex.assert_shape(x, (None, *self.output_shape))
        z = self.encode(x)
        return {"z": z, **_reconstructions(self.modality, self.likelihood, self.decode(z))}


class GaussianVAE(nn.Module):
    """VAE with a diagonal Gaussian posterior and a N(0, I) prior over `latent_dim` dims.

    z = z_mean + exp(z_logvar / 2) * eps, eps drawn from the `'sample'` rng stream, in
    training and whenever a `'sample'` rng is given (so the trainer's evaluation is a
    sampled, unbiased ELBO estimate); z = z_mean when no `'sample'` rng is given in eval.
    Outputs: `z_mean`, `z_logvar`, `z` (B, latent_dim), `recon/<modality>` and
    `recon_mean/<modality>` (B, *output_shape), all float32. Sample with
    `model.apply(variables, z, method=GaussianVAE.decode)`.
    """

    output_shape: Sequence[int]
    modality: str = "image"
    hidden: Sequence[int] = (256,)
    latent_dim: int = 16
    likelihood: str = "bernoulli"
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.trunk = MLP(tuple(self.hidden), activate_final=True, dtype=self.dtype)
        self.mean_head = nn.Dense(self.latent_dim, dtype=self.dtype)
        self.logvar_head = nn.Dense(self.latent_dim, dtype=self.dtype)
        self.decoder = _MLPDecoder(tuple(reversed(self.hidden)), self.output_shape, self.dtype)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, *output_shape) -> (z_mean, z_logvar), each (B, latent_dim) float32."""
        flat = x.reshape(x.shape[0], -1).astype(self.dtype)
        h = self.trunk(flat)
        return (
            self.mean_head(h).astype(jnp.float32),
            self.logvar_head(h).astype(jnp.float32),
        )

    def decode(self, z: jax.Array) -> jax.Array:
        """z (B, latent_dim) -> decoder output (B, *output_shape) float32."""
        return self.decoder(z)

    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        x = batch[self.modality]
        chex.assert_shape(x, (None, *self.output_shape))
        z_mean, z_logvar = self.encode(x)
        if train or self.has_rng("sample"):
            eps = jax.random.normal(self.make_rng("sample"), z_mean.shape, z_mean.dtype)
            z = z_mean + jnp.exp(0.5 * z_logvar) * eps
        else:
            z = z_mean
        return {
            "z_mean": z_mean,
            "z_logvar": z_logvar,
            "z": z,
            **_reconstructions(self.modality, self.likelihood, self.decode(z)),
        }


_DEFAULTS = {
    "modality": "image",
    "hidden": (256,),
    "latent_dim": 16,
    "likelihood": "bernoulli",  # how recon_mean reads the decoder output; match the loss
    "dtype": "float32",
}


def _module_kwargs(config: Any, spec: DataSpec, model: str) -> dict[str, Any]:
    fields = read_fields(config, _DEFAULTS, model)
    modality = fields["modality"]
    if modality not in VAE_MODALITIES:
        raise ConfigError(
            f"model {model!r} cannot reconstruct modality {modality!r}; "
            f"valid: {', '.join(VAE_MODALITIES)}"
        )
    require_modalities(model, [modality], spec)
    shape = getattr(spec, VAE_MODALITIES[modality])
    if shape is None:
        raise ConfigError(
            f"model {model!r} needs DataSpec.{VAE_MODALITIES[modality]} to size its decoder"
        )
    if fields["likelihood"] not in LIKELIHOODS:
        raise ConfigError(
            f"model {model!r} has likelihood={fields['likelihood']!r}; valid: {', '.join(LIKELIHOODS)}"
        )
    return {
        "likelihood": fields["likelihood"],
        "output_shape": tuple(shape),
        "modality": modality,
        "hidden": int_tuple(fields["hidden"], "hidden", model),
        "latent_dim": positive_int(fields["latent_dim"], "latent_dim", model),
        "dtype": parse_dtype(fields["dtype"], model),
    }


@MODELS.register("autoencoder")
def autoencoder(config: Any, spec: DataSpec) -> Autoencoder:
    """Builds an `Autoencoder`; fields: modality, hidden, latent_dim, likelihood, dtype."""
    return Autoencoder(**_module_kwargs(config, spec, "autoencoder"))


@MODELS.register("vae")
def gaussian_vae(config: Any, spec: DataSpec) -> GaussianVAE:
    """Builds a `GaussianVAE`; fields: modality, hidden, latent_dim, likelihood, dtype."""
    return GaussianVAE(**_module_kwargs(config, spec, "vae"))
