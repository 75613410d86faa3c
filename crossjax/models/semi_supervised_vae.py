"""M2 (Kingma, Rezende, Mohamed, Welling 2014, "Semi-supervised learning with deep
generative models"): the label y as a partly observed latent of a VAE.

  q(y|x)    a classifier                               -> `logits` (B, K)
  q(z|x,y)  a Gaussian encoder of x and one-hot y      -> for EVERY class y
  p(x|y,z)  a decoder of z and one-hot y               -> for EVERY class y

The model evaluates the encoder and decoder once per class, vectorised over a class axis,
so the loss (`crossjax.losses.semi_supervised_vae.m2`) can read the labelled ELBO at the
given class and sum the unlabelled one over all classes without another forward pass.
The encoder's first layer is W_x x + W_y y: W_x x is computed once per example and the
class term added per class, so enumerating the classes costs only the layers after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.models.encoders import MLP
from crossjax.models.factory import MODELS, int_tuple, read_fields
from crossjax.models.vae import _DEFAULTS as VAE_DEFAULTS
from crossjax.models.vae import _module_kwargs as vae_module_kwargs
from crossjax.models.vae import _Reconstructor


class M2(_Reconstructor):
    """The M2 semi-supervised VAE of `batch[modality]` with `num_classes` classes.

    Outputs (float32): `logits` (B, K) of q(y|x); `m2/z_mean`, `m2/z_logvar` (B, K, Z) of
    q(z|x,y) for each class y; `m2/recon/<modality>` (B, K, *output_shape), the decoder's
    raw output from z ~ q(z|x,y) (z = the mean in evaluation without a 'sample' rng);
    `target/audio` for audio. `hidden` are the encoder's widths (decoder: reversed, or
    `decoder_hidden`), `classifier_hidden` the classifier's.
    """

    num_classes: int = 10
    classifier_hidden: Sequence[int] = (500,)

    def setup(self) -> None:
        if not self.hidden:
            raise ConfigError("model 'm2' needs at least one hidden encoder layer")
        self.classifier = MLP((*self.classifier_hidden, self.num_classes), dtype=self.dtype)
        self.encode_x = nn.Dense(self.hidden[0], dtype=self.dtype)
        self.encode_y = nn.Dense(self.hidden[0], use_bias=False, dtype=self.dtype)
        self.trunk = MLP(tuple(self.hidden[1:]), activate_final=True, dtype=self.dtype)
        self.mean_head = nn.Dense(self.latent_dim, dtype=self.dtype)
        self.logvar_head = nn.Dense(self.latent_dim, dtype=self.dtype)
        self.decoder = self._build_decoder()

    def classify(self, x: jax.Array) -> jax.Array:
        """target x (B, *output_shape) -> logits of q(y|x) (B, K) float32."""
        return self.classifier(x.reshape(x.shape[0], -1).astype(self.dtype)).astype(jnp.float32)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """target x (B, *output_shape) -> (z_mean, z_logvar) of q(z|x,y), (B, K, Z) each."""
        flat = x.reshape(x.shape[0], -1).astype(self.dtype)
        classes = jnp.eye(self.num_classes, dtype=self.dtype)
        h = nn.relu(self.encode_x(flat)[:, None, :] + self.encode_y(classes)[None])  # (B, K, H)
        h = self.trunk(h) if len(self.hidden) > 1 else h
        return self.mean_head(h).astype(jnp.float32), self.logvar_head(h).astype(jnp.float32)

    def decode(self, z: jax.Array, y: jax.Array) -> jax.Array:
        """z (N, Z), one-hot y (N, K) -> decoder output (N, *output_shape) float32."""
        return self.decoder(jnp.concatenate([z, y.astype(z.dtype)], axis=-1))

    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        target = self.target(batch)
        size, k = target.shape[0], self.num_classes
        z_mean, z_logvar = self.encode(target)
        z = z_mean
        if train or self.has_rng("sample"):
            eps = jax.random.normal(self.make_rng("sample"), z_mean.shape, z_mean.dtype)
            z = z_mean + jnp.exp(0.5 * z_logvar) * eps
        classes = jnp.broadcast_to(jnp.eye(k, dtype=z.dtype), (size, k, k))
        raw = self.decode(z.reshape(size * k, -1), classes.reshape(size * k, k))
        outputs = {
            "logits": self.classify(target),
            "m2/z_mean": z_mean,
            "m2/z_logvar": z_logvar,
            f"m2/recon/{self.modality}": raw.reshape(size, k, *self.output_shape),
        }
        if self.modality == "audio":
            outputs["target/audio"] = target
        return outputs


@MODELS.register("m2")
def m2(config: Any, spec: DataSpec) -> M2:
    """Builds `M2`; fields: modality, hidden, classifier_hidden, latent_dim, likelihood,
    decoder, decoder_hidden, dtype (as model 'vae'), classes from the dataset."""
    if not spec.num_classes:
        raise ConfigError("model 'm2' needs a labelled dataset (DataSpec.num_classes)")
    fields = read_fields(config, {**VAE_DEFAULTS, "classifier_hidden": (500,)}, "m2")
    classifier_hidden = int_tuple(fields.pop("classifier_hidden"), "classifier_hidden", "m2")
    return M2(
        **vae_module_kwargs(fields, spec, "m2"),
        num_classes=spec.num_classes,
        classifier_hidden=classifier_hidden,
    )
