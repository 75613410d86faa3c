"""Multimodal VAEs: one shared latent z over any subset of image, text and audio.

Each modality m has an encoder and Dense heads giving a diagonal Gaussian expert
q_m(z | x_m); the experts of the modalities an example has (`present/<m>`) are combined
by the model's `posterior`:

- "poe": product of experts with a N(0, I) prior expert (MVAE, Wu & Goodman 2018,
  "Multimodal Generative Models for Scalable Weakly-Supervised Learning").
- "moe": uniform mixture of the experts (MMVAE, Shi et al. 2019, "Variational
  Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative Models").
- "mopoe": mixture over subsets of the PoE of each subset (MoPoE, Sutter et al. 2021,
  "Generalized Multimodal ELBO").

A decoder per modality maps z back (`crossjax.models.decoders`). A missing modality's
input is zeroed before encoding AND its expert is masked out, so nothing the model
outputs depends on its values. The class label may be one more modality ("label" in
`model.modalities`, `crossjax.models.label_modality`): present where `present/label`
holds, so partly labelled data trains the same model, which classifies by inferring the
label from the other modalities. The objectives are in `crossjax.losses.multimodal`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.gaussian import gaussian_log_density
from crossjax.models.decoders import (
    DEFAULT_LIKELIHOOD,
    audio_target,
    build_decoder,
    likelihood_mean,
)
from crossjax.models.factory import (
    MODELS,
    boolean,
    int_tuple,
    parse_dtype,
    positive_int,
    read_fields,
)
from crossjax.models.label_modality import (
    LABEL,
    LabelDecoder,
    LabelEncoder,
    num_classes_for_label,
)
from crossjax.models.modality_encoders import (
    build_encoders,
    encoder_inputs,
    parse_encoder_kwargs,
    parse_modalities,
    presence,
)

POSTERIORS = ("poe", "moe", "mopoe")

# --- posterior math: pure functions, float32 -------------------------------------------


def reparameterize(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """A sample of N(mean, diag(exp(logvar))) that is differentiable in both: (..., Z)."""
    eps = jax.random.normal(rng, mean.shape, jnp.float32)
    return mean + jnp.exp(0.5 * logvar) * eps


def product_of_experts(
    means: jax.Array,
    logvars: jax.Array,
    mask: jax.Array | None = None,
    *,
    prior_expert: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Product of diagonal Gaussian experts: (..., E, Z) means and logvars -> (..., Z) each.

    The precision-weighted mean over the experts whose `mask` (..., E) is True (absent
    experts contribute nothing), times a N(0, I) expert when `prior_expert`. A row with
    no present expert and no prior expert gets N(0, I).
    """
    means = jnp.asarray(means, jnp.float32)
    log_precision = -jnp.asarray(logvars, jnp.float32)
    if mask is None:
        mask = jnp.ones(means.shape[:-1], bool)
    if prior_expert:
        zeros = jnp.zeros_like(means[..., :1, :])
        means = jnp.concatenate([means, zeros], axis=-2)
        log_precision = jnp.concatenate([log_precision, zeros], axis=-2)
        mask = jnp.concatenate([mask, jnp.ones_like(mask[..., :1])], axis=-1)
    mask = mask[..., None]
    means = jnp.where(mask, means, 0.0)  # absent experts may hold anything, even NaN
    empty = ~jnp.any(mask, axis=-2)
    # Empty rows are computed on finite stand-ins and then replaced, so no NaN reaches
    # the gradients through the -inf of the masked experts.
    log_precision = jnp.where(empty[..., None, :], 0.0, jnp.where(mask, log_precision, -jnp.inf))
    joint_logvar = -jax.nn.logsumexp(log_precision, axis=-2)
    joint_mean = jnp.sum(jax.nn.softmax(log_precision, axis=-2) * means, axis=-2)
    return jnp.where(empty, 0.0, joint_mean), jnp.where(empty, 0.0, joint_logvar)


def mixture_log_density(
    z: jax.Array, means: jax.Array, logvars: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """log q(z) of the uniform mixture of the present experts:
    logsumexp_m log q_m(z) - log(#present), z (..., N, Z), means and logvars (..., E, Z),
    mask (..., E) bool -> (..., N). Rows with no present expert get 0."""
    log_q = gaussian_log_density(
        z[..., :, None, :], means[..., None, :, :], logvars[..., None, :, :]
    )
    if mask is None:
        mask = jnp.ones(means.shape[:-1], bool)
    mask = mask[..., None, :]  # (..., 1, E)
    empty = ~jnp.any(mask, axis=-1)  # (..., 1)
    log_q = jnp.where(empty[..., None], 0.0, jnp.where(mask, log_q, -jnp.inf))
    count = jnp.maximum(jnp.sum(mask, axis=-1), 1).astype(jnp.float32)
    return jnp.where(empty, 0.0, jax.nn.logsumexp(log_q, axis=-1) - jnp.log(count))


def moment_matched_mixture(
    means: jax.Array, logvars: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and log of the per-dimension variance of the uniform mixture of the present
    experts: (..., E, Z), mask (..., E) -> (..., Z) each; N(0, I) where none is present."""
    means = jnp.where(mask[..., None], jnp.asarray(means, jnp.float32), 0.0)
    logvars = jnp.where(mask[..., None], jnp.asarray(logvars, jnp.float32), 0.0)
    weights = mask.astype(jnp.float32)[..., None]
    count = jnp.sum(weights, axis=-2)
    weights = weights / jnp.maximum(count, 1.0)[..., None, :]
    mean = jnp.sum(weights * means, axis=-2)
    second = jnp.sum(weights * (jnp.exp(logvars) + jnp.square(means)), axis=-2)
    var = jnp.where(count > 0, second - jnp.square(mean), 1.0)
    return mean, jnp.log(jnp.maximum(var, 1e-12))


def subset_membership(num_modalities: int) -> np.ndarray:
    """All 2^M - 1 non-empty subsets of M modalities as (S, M) bool, by size then
    lexicographically: the singletons first, the full set last."""
    rows = [
        [i in subset for i in range(num_modalities)]
        for size in range(1, num_modalities + 1)
        for subset in itertools.combinations(range(num_modalities), size)
    ]
    return np.asarray(rows, bool)


# --- the model -------------------------------------------------------------------------


class _Experts(NamedTuple):
    """The experts of some modalities: mean, logvar (B, E, Z), present (B, E) bool, and
    the likelihood targets per modality."""

    mean: jax.Array
    logvar: jax.Array
    present: jax.Array
    targets: dict[str, jax.Array]


class MultimodalVAE(nn.Module):
    """Encoders -> Gaussian experts -> `posterior` -> shared z -> decoders, per modality.

    Inputs: the batch contract over `modalities` with optional `present/<m>` (B,) bool.
    z is sampled (from the 'sample' rng) in training and whenever a 'sample' rng is
    given, else z is the posterior mean. Outputs, all with leading dim B (float32):

    - `present/<m>` (B,) bool; `expert/<m>/mean`, `expert/<m>/logvar` (B, Z).
    - `unimodal/<m>/mean` (B, Z): the mean of the posterior given m alone, the z that
      `generate(sources=[m])` decodes (for "poe"/"mopoe" the expert times the prior
      expert, for "moe" the expert itself).
    - `z_mean`, `z_logvar`, `z` (B, Z): the joint posterior of the present modalities,
      the PoE for "poe" and "mopoe" (MoPoE's own component for the full set, which is
      what its paper conditions on) and the moment-matched mixture for "moe" (its `z` is
      a sample of the mixture itself, from one present expert chosen uniformly).
    - `recon/<m>` (B, *decoded) decoded from `z`, and `recon_mean/<m>` its likelihood
      mean (probabilities, ids (B, L) for text, the spectrogram for audio).
    - `target/<m>` what the likelihood scores: the image, the text ids (B, L), the audio
      log spectrogram (B, frames, bins); zero where the modality is absent.
    - "poe" and "mopoe" (same network and outputs; the losses "mvae" and "mopoe" read
      them): over the S = 2^M - 1 subsets of `subset_membership(M)`, in that order,
      `subset/mean`, `subset/logvar`, `subset/z` (B, S, Z) for the PoE of each subset's
      present members, `subset/valid` (B, S) bool (every member present),
      `subset/uses/<m>` (B, S) bool (m is a member and present) and `subset/recon/<m>`
      (B, S, *decoded).
    - with the label modality: `logits` (B, K), the label decoded from the posterior
      mean of the present OTHER modalities, and `label_logits/<m>` (B, K) from each
      other modality m alone (`unimodal/<m>/mean`).
    - "moe": `num_samples` K samples per expert, `expert/<e>/z` (B, K, Z), and every
      modality decoded from them, `expert/<e>/recon/<m>` (B, K, *decoded); with `dreg`
      also `expert/<e>/recon_detached/<m>`, decoded from stop_gradient(z).
    """

    modalities: Sequence[str]
    encoders: Mapping[str, nn.Module]
    decoders: Mapping[str, nn.Module]
    likelihoods: Mapping[str, str]
    latent_dim: int = 16
    posterior: str = "poe"
    prior_expert: bool = True
    num_samples: int = 1
    dreg: bool = False
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.mean_heads = {m: nn.Dense(self.latent_dim, dtype=self.dtype) for m in self.modalities}
        self.logvar_heads = {
            m: nn.Dense(self.latent_dim, dtype=self.dtype) for m in self.modalities
        }

    # -- encoding -------------------------------------------------------------------------
    def _experts(
        self, batch: Mapping[str, jax.Array], modalities: Sequence[str], train: bool
    ) -> _Experts:
        """The experts of `modalities`, each reading only examples where it is present."""
        batch_size = batch[modalities[0]].shape[0]
        means, logvars, present, targets = [], [], [], {}
        for m in modalities:
            keep = presence(batch, m, batch_size)
            inputs = encoder_inputs(m, batch, keep)
            h = self.encoders[m](*inputs, train=train)
            # The likelihood scores the ids for text, the log spectrogram for audio.
            targets[m] = audio_target(inputs[0]) if m == "audio" else inputs[0]
            means.append(self.mean_heads[m](h).astype(jnp.float32))
            logvars.append(self.logvar_heads[m](h).astype(jnp.float32))
            present.append(keep)
        return _Experts(jnp.stack(means, 1), jnp.stack(logvars, 1), jnp.stack(present, 1), targets)

    def _joint(self, ex: _Experts) -> tuple[jax.Array, jax.Array]:
        if self.posterior == "moe":
            return moment_matched_mixture(ex.mean, ex.logvar, ex.present)
        return product_of_experts(ex.mean, ex.logvar, ex.present, prior_expert=self.prior_expert)

    def _sample_joint(self, ex: _Experts) -> jax.Array:
        """One sample (B, Z) of the joint posterior (for "moe": of the mixture)."""
        if self.posterior == "moe":
            logits = jnp.where(ex.present, 0.0, -jnp.inf)
            logits = jnp.where(jnp.any(ex.present, -1, keepdims=True), logits, 0.0)
            choice = jax.random.categorical(self.make_rng("sample"), logits)[:, None, None]
            mean = jnp.take_along_axis(ex.mean, choice, axis=1)[:, 0]
            logvar = jnp.take_along_axis(ex.logvar, choice, axis=1)[:, 0]
            return reparameterize(self.make_rng("sample"), mean, logvar)
        return reparameterize(self.make_rng("sample"), *self._joint(ex))

    def encode(self, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """(z_mean, z_logvar), each (B, Z), of the joint posterior of the present modalities."""
        return self._joint(self._experts(batch, self.modalities, train=False))

    # -- decoding -------------------------------------------------------------------------
    def _decode(self, modality: str, z: jax.Array) -> jax.Array:
        """z (..., Z) -> the decoder's raw output (..., *decoded) float32."""
        flat = self.decoders[modality](z.reshape(-1, z.shape[-1]).astype(self.dtype))
        return flat.reshape(*z.shape[:-1], *flat.shape[1:]).astype(jnp.float32)

    def _likelihood_mean(self, modality: str, raw: jax.Array) -> jax.Array:
        return likelihood_mean(self.likelihoods[modality], raw)

    def generate(
        self,
        batch: Mapping[str, jax.Array],
        *,
        sources: Sequence[str],
        targets: Sequence[str],
        sample: bool = False,
    ) -> dict[str, jax.Array]:
        """Cross-modal generation: encode `sources` only (those of them present per
        example; other modalities are not read), decode each of `targets` from the joint
        posterior's mean, or from a sample ('sample' rng) when `sample`.

        Returns `recon/<t>` (raw decoder output) and `recon_mean/<t>` for each target.
        """
        for name, group in (("sources", sources), ("targets", targets)):
            unknown = [m for m in group if m not in self.modalities]
            if unknown or not group:
                raise ValueError(
                    f"generate: {name}={tuple(group)!r}; valid: a non-empty subset of "
                    f"{tuple(self.modalities)}"
                )
        ex = self._experts(batch, tuple(sources), train=False)
        z = self._sample_joint(ex) if sample else self._joint(ex)[0]
        outputs = {}
        for t in targets:
            raw = self._decode(t, z)
            outputs[f"recon/{t}"] = raw
            outputs[f"recon_mean/{t}"] = self._likelihood_mean(t, raw)
        return outputs

    # -- forward ----------------------------------------------------------------------------
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> dict:
        ex = self._experts(batch, self.modalities, train)
        sampling = train or self.has_rng("sample")
        outputs: dict[str, jax.Array] = {}
        for i, m in enumerate(self.modalities):
            outputs[f"present/{m}"] = ex.present[:, i]
            outputs[f"expert/{m}/mean"] = ex.mean[:, i]
            outputs[f"expert/{m}/logvar"] = ex.logvar[:, i]
            outputs[f"target/{m}"] = ex.targets[m]
        if self.posterior == "moe":
            unimodal = ex.mean
        else:
            unimodal = product_of_experts(
                ex.mean[..., None, :], ex.logvar[..., None, :], prior_expert=self.prior_expert
            )[0]
        for i, m in enumerate(self.modalities):
            outputs[f"unimodal/{m}/mean"] = unimodal[:, i]
        z_mean, z_logvar = self._joint(ex)
        if self.posterior == "moe":
            outputs.update(self._expert_samples(ex, sampling))
            z = self._sample_joint(ex) if sampling else z_mean
            recon = {m: self._decode(m, z) for m in self.modalities}
        else:
            subsets = self._subsets(ex, sampling)
            outputs.update(subsets)
            z = subsets["subset/z"][:, -1]  # the full set: the PoE of the present experts
            recon = {m: subsets[f"subset/recon/{m}"][:, -1] for m in self.modalities}
        outputs.update(z_mean=z_mean, z_logvar=z_logvar, z=z)
        if LABEL in self.modalities and len(self.modalities) > 1:
            outputs.update(self._label_inference(ex, unimodal))
        for m, raw in recon.items():
            outputs[f"recon/{m}"] = raw
            outputs[f"recon_mean/{m}"] = self._likelihood_mean(m, raw)
        return outputs

    def _label_inference(self, ex: _Experts, unimodal: jax.Array) -> dict[str, jax.Array]:
        """The label decoded from the other modalities: `logits` (B, K) from the joint
        posterior mean of those present, `label_logits/<m>` (B, K) from m alone."""
        others = [i for i, m in enumerate(self.modalities) if m != LABEL]
        idx = np.asarray(others)
        rest = _Experts(ex.mean[:, idx], ex.logvar[:, idx], ex.present[:, idx], {})
        outputs = {"logits": self._decode(LABEL, self._joint(rest)[0])}
        for i in others:
            outputs[f"label_logits/{self.modalities[i]}"] = self._decode(LABEL, unimodal[:, i])
        return outputs

    def _subsets(self, ex: _Experts, sampling: bool) -> dict[str, jax.Array]:
        members = jnp.asarray(subset_membership(len(self.modalities)))  # (S, M)
        uses = jnp.logical_and(members[None], ex.present[:, None, :])  # (B, S, M)
        mean, logvar = product_of_experts(
            ex.mean[:, None], ex.logvar[:, None], uses, prior_expert=self.prior_expert
        )  # (B, S, Z)
        z = reparameterize(self.make_rng("sample"), mean, logvar) if sampling else mean
        outputs = {
            "subset/mean": mean,
            "subset/logvar": logvar,
            "subset/z": z,
            "subset/valid": jnp.all(jnp.logical_or(~members[None], ex.present[:, None, :]), -1),
        }
        for i, m in enumerate(self.modalities):
            outputs[f"subset/uses/{m}"] = uses[..., i]
            outputs[f"subset/recon/{m}"] = self._decode(m, z)
        return outputs

    def _expert_samples(self, ex: _Experts, sampling: bool) -> dict[str, jax.Array]:
        """K samples per expert (stratified), each decoded into every modality."""
        shape = (ex.mean.shape[0], self.num_samples, *ex.mean.shape[1:])  # (B, K, E, Z)
        mean = jnp.broadcast_to(ex.mean[:, None], shape)
        z = reparameterize(self.make_rng("sample"), mean, ex.logvar[:, None]) if sampling else mean
        outputs = {}
        decoded = {}
        for m in self.modalities:
            if self.dreg:  # one decoder call for both, split after
                both = self._decode(m, jnp.concatenate([z, jax.lax.stop_gradient(z)], axis=1))
                decoded[m], detached = jnp.split(both, 2, axis=1)
                for j, e in enumerate(self.modalities):
                    outputs[f"expert/{e}/recon_detached/{m}"] = detached[:, :, j]
            else:
                decoded[m] = self._decode(m, z)
        for j, e in enumerate(self.modalities):
            outputs[f"expert/{e}/z"] = z[:, :, j]
            for m in self.modalities:
                outputs[f"expert/{e}/recon/{m}"] = decoded[m][:, :, j]
        return outputs


# --- factory ---------------------------------------------------------------------------

_DEFAULTS = {
    # None: every supported modality the dataset provides; "label" adds the class as a
    # modality (crossjax.models.label_modality)
    "modalities": None,
    "latent_dim": 16,
    "posterior": "poe",  # poe (MVAE) | moe (MMVAE) | mopoe (MoPoE)
    "prior_expert": True,  # a N(0, I) expert in every product (poe, mopoe)
    "image_encoder": "mlp",  # any IMAGE_ENCODERS name
    "text_encoder": "bow",  # any TEXT_ENCODERS name
    "audio_encoder": "cnn",  # any AUDIO_ENCODERS name
    "encoder_kwargs": {},  # per modality, e.g. {"audio": {"channels": (32,)}}
    "features": 128,  # encoder output width, before the mean and logvar heads
    "decoder_hidden": (256,),
    "image_decoder": "mlp",  # mlp | deconv
    "likelihoods": {},  # per modality, overriding decoders.DEFAULT_LIKELIHOOD
    "num_samples": 1,  # K samples per expert (moe: IWAE / DReG)
    "dreg": False,  # moe: also decode stop_gradient(z), for the mmvae loss's DReG
    "dtype": "float32",
}


def _likelihoods(value: Any, modalities: tuple[str, ...], model: str) -> dict[str, str]:
    value = value or {}
    if not isinstance(value, dict) or set(value) - set(modalities):
        raise ConfigError(
            f"model {model!r} has likelihoods={value!r}; valid: a dict keyed by "
            f"{', '.join(modalities)}"
        )
    chosen = {m: value.get(m, DEFAULT_LIKELIHOOD[m]) for m in modalities}
    for m, likelihood in chosen.items():
        categorical = m in ("text", LABEL)
        valid = ("categorical",) if categorical else ("bernoulli", "gaussian", "laplace")
        if likelihood not in valid:
            raise ConfigError(
                f"model {model!r} has likelihoods.{m}={likelihood!r}; valid: {', '.join(valid)}"
            )
    return chosen


@MODELS.register("multimodal_vae")
def multimodal_vae(config: Any, spec: DataSpec) -> MultimodalVAE:
    """Builds a `MultimodalVAE` from the `model` config section (fields in `_DEFAULTS`)."""
    model = "multimodal_vae"
    fields = read_fields(config, _DEFAULTS, model)
    requested = fields["modalities"]
    requested = (requested,) if isinstance(requested, str) else requested
    with_label = requested is not None and LABEL in requested
    if with_label:
        requested = tuple(m for m in requested if m != LABEL)
    modalities = parse_modalities(requested, spec, model)
    posterior = fields["posterior"]
    if posterior not in POSTERIORS:
        raise ConfigError(
            f"model {model!r} has posterior={posterior!r}; valid: {', '.join(POSTERIORS)}"
        )
    num_samples = positive_int(fields["num_samples"], "num_samples", model)
    if posterior != "moe" and num_samples != 1:
        raise ConfigError(
            f"model {model!r} has num_samples={num_samples} with posterior={posterior!r}; "
            "valid: 1 (several samples per expert are for posterior 'moe')"
        )
    for flag in ("prior_expert", "dreg"):
        boolean(fields[flag], flag, model)
    if fields["dreg"] and posterior != "moe":
        raise ConfigError(f"model {model!r} has dreg=True; valid only with posterior 'moe'")
    dtype = parse_dtype(fields["dtype"], model)
    hidden = int_tuple(fields["decoder_hidden"], "decoder_hidden", model)
    features = positive_int(fields["features"], "features", model)
    encoders = build_encoders(
        {m: fields[f"{m}_encoder"] for m in modalities},
        parse_encoder_kwargs(fields["encoder_kwargs"], model),
        spec,
        features=features,
        dtype=dtype,
        model=model,
    )
    decoders = {
        m: build_decoder(
            m,
            spec,
            hidden=hidden,
            kind=fields["image_decoder"] if m == "image" else "mlp",
            dtype=dtype,
        )
        for m in modalities
    }
    if with_label:
        classes = num_classes_for_label(spec, model)
        modalities = (*modalities, LABEL)
        encoders[LABEL] = LabelEncoder(classes, features, dtype)
        decoders[LABEL] = LabelDecoder(classes, hidden, dtype)
    return MultimodalVAE(
        modalities=modalities,
        encoders=encoders,
        decoders=decoders,
        likelihoods=_likelihoods(fields["likelihoods"], modalities, model),
        latent_dim=positive_int(fields["latent_dim"], "latent_dim", model),
        posterior=posterior,
        prior_expert=fields["prior_expert"],
        num_samples=num_samples,
        dreg=fields["dreg"],
        dtype=dtype,
    )
