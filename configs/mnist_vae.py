"""python scripts/train.py --config configs/mnist_vae.py --workdir runs/mnist_vae

The classic MNIST VAE (pytorch/examples `vae`, Kingma & Welling 2014): MLP encoder
784-400, latent 20, decoder 20-400-784, Bernoulli likelihood (binary cross-entropy)
on the continuous grey levels in [0, 1] (uint8 / 255, not binarised), Adam 1e-3
without a schedule or clipping, batch 128, the recipe's 4,690 updates (10 epochs of the 60k; drawn here from the 54k
left after the 10% validation hold-out, about 11 passes over them). Reports test `neg_elbo` (published ~104-106
nats per image) and `iwae_nll`, the -IWAE bound with K = 64 samples beside it.

Reads TFDS `mnist` by name, or a local copy of the four idx files (gzipped or not):
`--config.data.source.path=/data/mnist`. Tiny (a few steps, for tests):
`--config configs/mnist_vae.py:tiny`.
"""

import math

import ml_collections

from configs.common import TINY_EVAL, TINY_TRAIN, is_tiny, run_length, tiny_catalog
from configs.digits_vae import IWAE_SAMPLES, use_image_vae
from configs.mnist import local_idx
from crossjax.config import base_config

MNIST_TRAIN = 60_000


def epochs_to_steps(
    config: ml_collections.ConfigDict, epochs: int, num_train: int = MNIST_TRAIN
) -> int:
    """The published recipe's number of updates: `epochs` passes over all `num_train`
    training examples at the config's batch size (10 epochs of MNIST's 60k at 128: 4,690).
    The run draws them from the examples left after its validation hold-out (54k), so
    the same number of updates is about 11 passes over those."""
    return math.ceil(epochs * num_train / config.batch_size)


def plain_optimizer(
    config: ml_collections.ConfigDict, name: str, learning_rate: float, momentum: float = 0.9
) -> None:
    """`name` ("adam" or "sgd" with `momentum`) at a constant `learning_rate`, no warmup,
    weight decay or clipping: the published recipes' optimizer."""
    config.optimizer.name = name
    config.optimizer.learning_rate = learning_rate
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.grad_clip_norm = 0.0
    config.optimizer.weight_decay = 0.0
    if name == "sgd":
        config.optimizer.b1 = momentum


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = "mnist"
    local_idx(config)  # a local idx folder when data.source.path is set
    config.data.modalities = ("image",)
    run_length(config, steps=1, batch_size=128, log_every=100, checkpoint_every=1000)
    config.num_train_steps = epochs_to_steps(config, 10)  # 4690
    config.eval_every = config.num_train_steps // 2
    use_image_vae(config, hidden=(400,), latent_dim=20)
    iwae = {"num_samples": IWAE_SAMPLES, "modality": "image", "likelihood": "bernoulli"}
    config.evaluators = (*config.evaluators, ("iwae_nll", iwae))
    plain_optimizer(config, "adam", 1e-3)
    if is_tiny(variant):
        tiny_catalog(config, f"train[:{TINY_TRAIN}]", f"test[:{TINY_EVAL}]")
        config.optimizer.warmup_steps = 0
        config.eval_every = 0
    return config
