"""python scripts/train.py --config configs/digits_text_seq_ae.py --workdir runs/digits_text_seq_ae

Sequence autoencoder of the `crossjax_digits` descriptions (text only): an LSTM encodes
the words into z (32 numbers) and an LSTM decoder started from z rewrites them
(`token_cross_entropy` with teacher forcing: `token_accuracy` is the reconstruction's
per-token accuracy). The "captioning" evaluator, named "reconstruction" here, decodes z
greedily and with beam search and reports BLEU-4, CIDEr-D and the exact-match rate of the
reconstructions. Tiny variant for tests: `--config configs/digits_text_seq_ae.py:tiny`.
"""

import ml_collections

from configs.common import embedded_data, is_tiny, optimizer, run_length, shrink_to_tiny
from crossjax.config import base_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    run_length(config, steps=1500, batch_size=128)
    embedded_data(config, ("text",))
    config.data.label_key = ""
    config.model = ml_collections.ConfigDict(
        {
            "name": "seq_autoencoder",
            "encoder": "lstm",
            "encoder_kwargs": {"embed_dim": 64, "hidden": 128},
            "latent_dim": 32,
            "embed_dim": 64,
            "hidden": 128,
            "cell": "lstm",
            "condition_inputs": True,
            "dtype": "float32",
        }
    )
    config.losses = (("token_cross_entropy", 1.0),)
    config.evaluators = (("captioning", {"name": "reconstruction", "beam_size": 4}),)
    optimizer(config, 3e-3)
    if is_tiny(variant):
        shrink_to_tiny(config)
        config.model.encoder_kwargs = {"embed_dim": 8, "hidden": 16}
        config.model.latent_dim = 8
        config.model.embed_dim = 8
        config.model.hidden = 16
        config.evaluators = (("captioning", {"name": "reconstruction", "beam_size": 2}),)
    return config
