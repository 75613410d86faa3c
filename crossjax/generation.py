"""Cross-modal generation with a trained multimodal VAE: encode any subset, decode any modality.

    gen = crossjax.runs.load_generator("runs/digits_mvae")
    batch = gen.text_batch(["a handwritten seven", "the digit 3"])
    images = gen(batch, sources=("text",), targets=("image",))["image"]  # (2, 8, 8, 1)

A model supports generation when it has a `generate(batch, *, sources, targets, sample)`
method returning `recon_mean/<target>` (the point estimate: pixel means, token ids, ...)
for each target, encoding only from the `sources` present in the batch
(`crossjax.models.multimodal_vae`). `scripts/generate.py` is the command-line front end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from crossjax.data.spec import DataSpec, dummy_batch
from crossjax.errors import ConfigError

_CACHE: dict[int, tuple[Any, dict]] = {}  # id(model) -> (model, {(sources, targets, sample): fn})


def jitted_generate(model: Any, sources: tuple[str, ...], targets: tuple[str, ...], sample: bool):
    """`jax.jit` of `model.generate` for one (sources, targets, sample), built once per model:
    fn(params, batch, rng) -> outputs."""
    if not hasattr(model, "generate"):
        raise ConfigError(
            f"cross-modal generation needs a model with a generate method (e.g. "
            f"multimodal_vae); {type(model).__name__} has none"
        )
    cached = _CACHE.get(id(model))
    if cached is None or cached[0] is not model:
        _CACHE.clear()  # one run at a time: keep only the current model alive
        cached = _CACHE[id(model)] = (model, {})
    key = (tuple(sources), tuple(targets), bool(sample))
    if key not in cached[1]:

        def generate(params, batch, rng):
            return model.apply(
                {"params": params},
                batch,
                sources=key[0],
                targets=key[1],
                sample=key[2],
                rngs={"sample": rng},
                method="generate",
            )

        cached[1][key] = jax.jit(generate)
    return cached[1][key]


def check_modalities(
    sources: Sequence[str], targets: Sequence[str], modalities: Sequence[str], what: str
) -> None:
    """ConfigError unless sources and targets are non-empty subsets of `modalities`."""
    for role, names in (("sources", sources), ("targets", targets)):
        if not names:
            raise ConfigError(f"{what}: no {role} given; choose from {', '.join(modalities)}")
        for m in names:
            if m not in modalities:
                raise ConfigError(
                    f"{what}: {role} names {m!r}, which the model does not have; valid: "
                    f"{', '.join(modalities)}"
                )


@dataclasses.dataclass
class CrossModalGenerator:
    """A trained generative model with its parameters, data spec and vocabulary
    (`crossjax.runs.load_generator` restores one from a workdir)."""

    model: Any
    params: Any
    spec: DataSpec
    vocab: Any = None
    data: Any = None  # the run's DataPipeline, when restored from a workdir

    def eval_examples(self, num: int, split: str = "test") -> dict[str, np.ndarray]:
        """The first `num` examples of the run's `split` ("test" or "validation"), as one
        numpy batch."""
        if self.data is None:
            raise ConfigError(
                "eval_examples needs a generator restored with crossjax.runs.load_generator"
            )
        batch = next(iter(self.data.eval_batches(max(num, 1), split=split)))
        valid = batch.pop("valid")
        return {k: v[valid][:num] for k, v in batch.items()}

    def __call__(
        self,
        batch: dict[str, Any],
        *,
        sources: Sequence[str],
        targets: Sequence[str],
        sample: bool = False,
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        """{target: (B, ...) numpy} generated from the `sources` entries of `batch`: image
        means in [0, 1], token ids (B, L) for text (see `decode_text`), ..."""
        check_modalities(sources, targets, self.spec.modalities, "generate")
        missing = [m for m in sources if m not in batch]
        if missing:
            raise ConfigError(f"generate: the batch has no {missing[0]!r} to encode")
        full = _complete(batch, self.spec, sources)
        fn = jitted_generate(self.model, tuple(sources), tuple(targets), sample)
        out = fn(self.params, full, jax.random.key(seed))
        return {t: np.asarray(jax.device_get(out[f"recon_mean/{t}"])) for t in targets}

    def text_batch(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """Prompts tokenised with the run's vocabulary: {"text": (N, L), "text_mask": (N, L)}."""
        if self.vocab is None:
            raise ConfigError("this run has no text modality, so it cannot read text prompts")
        encoded = [self.vocab.encode(p, self.spec.max_text_len) for p in prompts]
        return {
            "text": np.stack([ids for ids, _ in encoded]),
            "text_mask": np.stack([mask for _, mask in encoded]),
        }

    def decode_text(self, ids: np.ndarray) -> list[str]:
        """Generated token ids (N, L) -> strings (see `decode_ids`)."""
        return decode_ids(self.vocab, ids)


def decode_ids(vocab: Any, ids: np.ndarray) -> list[str]:
    """Token ids (N, L) -> N strings; the first padding id (0) ends each text."""
    out = []
    for row in np.asarray(ids):
        end = np.flatnonzero(row == 0)
        out.append(vocab.decode(row[: end[0]] if end.size else row))
    return out


def _complete(batch: dict[str, Any], spec: DataSpec, sources: Sequence[str]) -> dict[str, Any]:
    """`batch` with every modality of `spec` (zeros where it has none) and `present/<m>`
    True exactly for the sources, so the model sees the batch shapes it was built for."""
    size = len(next(iter(batch[m] for m in sources)))
    full = {k: v for k, v in dummy_batch(spec, size).items() if k != "label"}
    full.update({k: v for k, v in batch.items() if k in full})
    for m in spec.modalities:
        full[f"present/{m}"] = np.full((size,), m in sources)
    return full
