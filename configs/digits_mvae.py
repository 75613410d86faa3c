"""python scripts/train.py --config configs/digits_mvae.py --workdir runs/digits_mvae

MVAE (product of experts, Wu & Goodman 2018) of image + text + audio of
`crossjax_digits` with one shared latent, plus a contrastive `latent_alignment` term
(as in Shi et al. 2021's contrastive MVAE). MVAE's unimodal ELBOs reconstruct only
their own modality, so nothing teaches the audio expert where the image and text
experts put a digit: audio -> image coherence stays at chance without the term
(results/config_choices.md). The `noalign` flag trains the paper's objective alone.

A variant is a "_"-joined set of flags: `missing` removes one random modality from
half of the training examples (`data.missing_fraction = 0.5`), `tiny` runs a few steps
on the tiny dataset, `clean` trains on `crossjax_digits/clean` (undegraded images,
descriptions that always name the digit, weight decay 1.0), judged by an image
classifier trained on that variant; e.g. `:clean_missing`, `:tiny_missing`.
`multimodal_vae_config` holds what the MVAE, MMVAE and MoPoE configs share.
"""

import ml_collections

from configs.common import (
    DIGITS_MODALITIES,
    best_checkpoint,
    embedded_data,
    optimizer,
    run_length,
    shrink_to_tiny,
)
from crossjax.config import base_config, variant_flags

FLAGS = ("tiny", "missing", "clean")  # a variant joins any of them with "_"
# The digit is worth little in each likelihood (0.9 nats of the image's Bernoulli NLL,
# about 2 of the text's), so at beta = 1 the latent collapses to a few nats that do
# not identify it; at 0.2 it encodes ~15 nats and the digit.
BETA = 0.2
# Per-modality log-likelihood weights. The audio spectrogram has 14 x 129 values whose
# Laplace NLL is dominated by each clip's loudness (worth ~460 nats against ~18 for the
# digit), so at weight 1 the latent holds loudness and memorised noise; at 0.005 the
# audio expert is trained mostly by what it must predict of the image and text.
WEIGHTS = {"image": 1.0, "text": 1.0, "audio": 0.005}
# AdamW decoupled weight decay (times the learning rate) of the `clean` flag. There the
# audio expert memorises the noise of the 11.5k training clips: with the default 1e-4,
# MoPoE maps training audio to the right digit 93% of the time but held-out audio 81%.
# On the validation split (digits_mopoe:clean) 1.0 gives audio -> image 0.860 against
# 0.796 at 1e-4, and a lower neg_elbo (2691.2 vs 2698.4). On the default (degraded)
# data 1.0 costs coherence (MoPoE text -> image 0.49 -> 0.16, measured on test before
# the validation split existed), so the default keeps base_config's 1e-4.
CLEAN_WEIGHT_DECAY = 1.0
# The contrastive term of the MVAE config (weight, kwargs).
ALIGNMENT = ("latent_alignment", 1.0, {"temperature": 1.0})


# The judge of cross-modal coherence: the image-only digits classifier, a run of its own,
# trained beforehand and found beside the run's workdir (runs/digits_mvae ->
# runs/coherence/digits_image); evaluation names the command when it is missing.
PAIRS = ("text_to_image", "audio_to_image", "image_to_image", "text+audio_to_image")


def generation_evaluators(dataset: str, modalities: tuple[str, ...], judge: str) -> tuple:
    """Reconstruction and cross-modal pictures, a linear probe of the latent, and (digits
    with images) coherence judged by the image classifier (`judge`: its configs/digits_image.py
    variant, "" for the default)."""
    others = [m for m in modalities if m != "image"]
    evaluators = [
        ("reconstruction_images", {"modality": "image"}),
        ("crossmodal_images", {"pairs": tuple(f"{m}_to_image" for m in others)}),
        ("linear_probe", {"embedding": "z_mean", "name": "latent_probe"}),
    ]
    if dataset == "crossjax_digits":
        classifier = {
            "workdir": "coherence/digits_image" + (f"_{judge}" if judge else ""),
            "trained_with": "configs/digits_image.py" + (f":{judge}" if judge else ""),
        }
        pairs = tuple(p for p in PAIRS if set(p.split("_to_")[0].split("+")) <= set(modalities))
        evaluators.append(("coherence", {"pairs": pairs, "classifiers": {"image": classifier}}))
    return tuple(evaluators)


def multimodal_vae_config(
    posterior: str,
    loss: str,
    loss_kwargs: dict,
    variant: str | None,
    *,
    extra_flags: tuple[str, ...] = (),
    dataset: str = "crossjax_digits",
    modalities: tuple[str, ...] = DIGITS_MODALITIES,
    model_fields: dict | None = None,
) -> ml_collections.ConfigDict:
    """A multimodal VAE with `posterior` trained by `loss` (kwargs `loss_kwargs`, plus the
    per-modality likelihood weights) on `dataset`; `model_fields` override the model's.
    `variant` joins FLAGS and `extra_flags` (left for the caller) with "_"."""
    flags = variant_flags(variant, (*FLAGS, *extra_flags))
    if "clean" in flags and dataset != "crossjax_digits":
        raise ValueError(f"config variant {variant!r}: the clean flag is for crossjax_digits only")
    config = base_config()
    run_length(config, steps=1500, batch_size=128, log_every=250)
    best_checkpoint(config, "neg_elbo", "min")
    embedded_data(config, modalities, name=dataset)
    # The text decoder predicts every word of the vocabulary at every position, so its
    # cost grows with the vocabulary: 256 words keep the digit words and most typos
    # (a text-only classifier, configs/digits_text.py, on the validation split: 0.804
    # with 256 words vs 0.813 with all 469; the decoder's cost is what the cap buys).
    config.data.max_vocab_size = 256
    config.model = ml_collections.ConfigDict(
        {
            "name": "multimodal_vae",
            "modalities": modalities,
            "posterior": posterior,
            "latent_dim": 16,
            "image_encoder": "mlp",
            "text_encoder": "bow",
            "encoder_kwargs": {},
            "features": 128,
            "decoder_hidden": (128,),
            "image_decoder": "mlp",
            "dtype": "float32",
            **(model_fields or {}),
        }
    )
    weights = {m: w for m, w in WEIGHTS.items() if m in modalities}
    config.losses = ((loss, 1.0, {"weights": weights, **loss_kwargs}),)
    judge = next((f for f in ("tiny", "clean") if f in flags), "")
    if judge == "clean":  # clean images and always-informative text
        config.data.name = f"{dataset}/clean"
    config.evaluators = generation_evaluators(dataset, modalities, judge)

    optimizer(config, 2e-3, weight_decay=CLEAN_WEIGHT_DECAY if "clean" in flags else None)
    if "missing" in flags:
        config.data.missing_fraction = 0.5
    if "tiny" in flags:
        shrink_to_tiny(config)
    return config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = multimodal_vae_config(
        "poe", "mvae", {"beta": BETA, "warmup_steps": 500, "num_subsets": 1}, variant,
        extra_flags=("noalign",),
    )  # fmt: skip
    if "noalign" not in variant_flags(variant, (*FLAGS, "noalign")):
        config.losses = (*config.losses, ALIGNMENT)
    return config
