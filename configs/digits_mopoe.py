"""python scripts/train.py --config configs/digits_mopoe.py --workdir runs/digits_mopoe

MoPoE (mixture of products of experts, Sutter et al. 2021) of image + text + audio of
`crossjax_digits`: all 7 subsets' PoE posteriors, each reconstructing every modality.
Variants: any "_"-joined set of the flags `missing`, `clean`, `tiny` (see
configs/digits_mvae.py), e.g. `:clean_missing`.
"""

import ml_collections

from configs.digits_mvae import BETA, multimodal_vae_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return multimodal_vae_config("mopoe", "mopoe", {"beta": BETA, "warmup_steps": 500}, variant)
