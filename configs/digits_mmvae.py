"""python scripts/train.py --config configs/digits_mmvae.py --workdir runs/digits_mmvae

MMVAE (mixture of experts, Shi et al. 2019) of image + text + audio of `crossjax_digits`,
trained with the stratified DReG IWAE objective over K = 2 samples per expert. Variants:
any "_"-joined set of the flags `missing`, `clean`, `tiny` (see configs/digits_mvae.py),
e.g. `:clean_missing`.
"""

import ml_collections

from configs.digits_mvae import BETA, WEIGHTS, multimodal_vae_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    # The MMVAE bound has no beta: the likelihood weights are divided by it instead.
    weights = {m: w / BETA for m, w in WEIGHTS.items()}
    return multimodal_vae_config(
        "moe", "mmvae", {"objective": "dreg", "weights": weights}, variant,
        model_fields={"num_samples": 2, "dreg": True},
    )  # fmt: skip
