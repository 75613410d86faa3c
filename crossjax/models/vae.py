"""Single-modality autoencoders: an MLP encoder and a decoder from `crossjax.models.decoders`.

The model reconstructs a TARGET derived from `batch[modality]`: the image itself, or for
audio the log spectrogram of the waveform (`decoders.audio_target`, (B, frames, bins)),
which it also outputs as `target/audio` so the losses score `recon/audio` against it.
The encoder reads the same target representation, flattened.

`recon/<modality>` has the target's shape and holds the decoder's raw output: the loss
decides how to read it (Bernoulli logits, Gaussian mean or Laplace location; see
`crossjax.losses.generative.nll`). `recon_mean/<modality>` is its point estimate under
the model's `likelihood` field (sigmoid of the logits for Bernoulli): the values to look
at, e.g. in pictures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models.decoders import (
    IMAGE_DECODER_KINDS,
    AudioDecoder,
    ImageDecoder,
    audio_target,
    decoded_shape,
    likelihood_mean,
)
from crossjax.models.encoders import MLP
from crossjax.models.factory import MODELS, int_tuple, parse_dtype, positive_int, read_fields
from crossjax.models.modality_encoders import check_modality

# Continuous modalities these models reconstruct, and the likelihoods that fit them.
VAE_MODALITIES = ("image", "audio")
LIKELIHOODS = ("bernoulli", "gaussian", "laplace")


class _Reconstructor(nn.Module):
    """What Autoencoder and GaussianVAE share: the target of `batch[modality]`, the
    decoder (built in `_build_decoder`), and the reconstruction outputs."""

    output_shape: Sequence[int]
    modality: str = "image"
    hidden: Sequence[int] = (256,)
    latent_dim: int = 16
    likelihood: str = "bernoulli"
    decoder_kind: str = "mlp"
    decoder_hidden: Sequence[int] | None = None  # None: reversed(hidden)
    dtype: Any = jnp.float32

    def _build_decoder(self) -> nn.Module:
        hidden = tuple(
            reversed(self.hidden) if self.decoder_hidden is None else self.decoder_hidden
        )
        if self.modality == "audio":
            return AudioDecoder(self.output_shape, hidden, self.dtype)
        return ImageDecoder(self.output_shape, hidden, self.decoder_kind, self.dtype)

    def target(self, batch: Mapping[str, jax.Array]) -> jax.Array:
        """What the model reconstructs: `batch[modality]`, or the log spectrogram of the
        audio waveform. (B, *output_shape)."""
        x = batch[self.modality]
        if self.modality == "audio":
            x = audio_target(x)
        chex.assert_shape(x, (None, *self.output_shape))
        return x

    def _outputs(self, raw: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
        """recon/<m> (raw), recon_mean/<m> and, for audio, target/audio."""
        outputs = {
            f"recon/{self.modality}": raw,
            f"recon_mean/{self.modality}": likelihood_mean(self.likelihood, raw),
        }
        if self.modality == "audio":
            outputs["target/audio"] = target
        return outputs


class Autoencoder(_Reconstructor):
    """Deterministic autoencoder of `batch[modality]`: target (B, *output_shape).

    Outputs: `z` (B, latent_dim), `recon/<modality>` and `recon_mean/<modality>`
    (B, *output_shape) float32, and `target/audio` for audio.
    """

    def setup(self) -> None:
        self.encoder = MLP((*self.hidden, self.latent_dim), dtype=self.dtype)
        self.decoder = self._build_decoder()

    def encode(self, x: jax.Array) -> jax.Array:
        """target x (B, *output_shape) -> z (B, latent_dim) float32."""
        flat = x.reshape(x.shape[0], -1).astype(self.dtype)
        return self.encoder(flat).astype(jnp.float32)

    def decode(self, z: jax.Array) -> jax.Array:
        """z (B, latent_dim) -> decoder output (B, *output_shape) float32."""
        return self.decoder(z)

    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        target = self.target(batch)
        z = self.encode(target)
        return {"z": z, **self._outputs(self.decode(z), target)}


class GaussianVAE(_Reconstructor):
    """VAE with a diagonal Gaussian posterior and a N(0, I) prior over `latent_dim` dims.

    z = z_mean + exp(z_logvar / 2) * eps, eps drawn from the `'sample'` rng stream, in
    training and whenever a `'sample'` rng is given (so the trainer's evaluation is a
    sampled, unbiased ELBO estimate); z = z_mean when no `'sample'` rng is given in eval.
    The encoder does not read the rng, so vmapping `apply` over sample keys (IWAE,
    `crossjax.losses.generative.iwae_log_weights`) computes it once, not per sample.
    Outputs: `z_mean`, `z_logvar`, `z` (B, latent_dim), `recon/<modality>` and
    `recon_mean/<modality>` (B, *output_shape), `target/audio` for audio, all float32.
    Sample with `model.apply(variables, z, method=GaussianVAE.decode)`.
    """

    def setup(self) -> None:
        self.trunk = MLP(tuple(self.hidden), activate_final=True, dtype=self.dtype)
        self.mean_head = nn.Dense(self.latent_dim, dtype=self.dtype)
        self.logvar_head = nn.Dense(self.latent_dim, dtype=self.dtype)
        self.decoder = self._build_decoder()

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """target x (B, *output_shape) -> (z_mean, z_logvar), each (B, latent_dim) float32."""
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
        target = self.target(batch)
        z_mean, z_logvar = self.encode(target)
        if train or self.has_rng("sample"):
            eps = jax.random.normal(self.make_rng("sample"), z_mean.shape, z_mean.dtype)
            z = z_mean + jnp.exp(0.5 * z_logvar) * eps
        else:
            z = z_mean
        return {
            "z_mean": z_mean,
            "z_logvar": z_logvar,
            "z": z,
            **self._outputs(self.decode(z), target),
        }


_DEFAULTS = {
    "modality": "image",
    "hidden": (256,),
    "latent_dim": 16,
    "likelihood": "bernoulli",  # how recon_mean reads the decoder output; match the loss
    "decoder": "mlp",  # or "deconv" (images only)
    "decoder_hidden": None,  # widths (mlp) / channels per stride-2 stage (deconv)
    "dtype": "float32",
}


def _module_kwargs(config: Any, spec: DataSpec, model: str) -> dict[str, Any]:
    fields = read_fields(config, _DEFAULTS, model)
    modality = check_modality(fields["modality"], spec, model, VAE_MODALITIES, "reconstruct")
    if fields["likelihood"] not in LIKELIHOODS:
        raise ConfigError(
            f"model {model!r} has likelihood={fields['likelihood']!r}; valid: {', '.join(LIKELIHOODS)}"
        )
    valid_kinds = IMAGE_DECODER_KINDS if modality == "image" else ("mlp",)
    if fields["decoder"] not in valid_kinds:
        raise ConfigError(
            f"model {model!r} has decoder={fields['decoder']!r} for {modality}; "
            f"valid: {', '.join(valid_kinds)}"
        )
    hidden = int_tuple(fields["hidden"], "hidden", model)
    decoder_hidden = fields["decoder_hidden"]
    if decoder_hidden is not None:
        decoder_hidden = int_tuple(decoder_hidden, "decoder_hidden", model)
    if fields["decoder"] == "deconv" and not (hidden if decoder_hidden is None else decoder_hidden):
        raise ConfigError(f"model {model!r} with decoder='deconv' needs decoder_hidden channels")
    return {
        "output_shape": decoded_shape(modality, spec),
        "modality": modality,
        "hidden": hidden,
        "latent_dim": positive_int(fields["latent_dim"], "latent_dim", model),
        "likelihood": fields["likelihood"],
        "decoder_kind": fields["decoder"],
        "decoder_hidden": decoder_hidden,
        "dtype": parse_dtype(fields["dtype"], model),
    }


@MODELS.register("autoencoder")
def autoencoder(config: Any, spec: DataSpec) -> Autoencoder:
    """Builds an `Autoencoder`; fields: modality, hidden, latent_dim, likelihood, decoder,
    decoder_hidden, dtype."""
    return Autoencoder(**_module_kwargs(config, spec, "autoencoder"))


@MODELS.register("vae")
def gaussian_vae(config: Any, spec: DataSpec) -> GaussianVAE:
    """Builds a `GaussianVAE`; fields: modality, hidden, latent_dim, likelihood, decoder,
    decoder_hidden, dtype."""
    return GaussianVAE(**_module_kwargs(config, spec, "vae"))
