"""python scripts/train.py --config configs/mnist_cnn.py --workdir runs/mnist_cnn

The flax examples' MNIST CNN (published 99.17% test accuracy): 3x3 conv32 + ReLU +
2x2 average pool, 3x3 conv64 + ReLU + 2x2 average pool, flatten, dense256 + ReLU,
dense10; SGD lr 0.1 momentum 0.9 without a schedule, batch 128, the recipe's
4,690 updates (10 epochs of the 60k; drawn here from the 54k left after the 10%
validation hold-out: the checkpoint is chosen on validation accuracy, test is reported
once at the end).

Reads TFDS `mnist` by name, or a local copy of the four idx files:
`--config.data.source.path=/data/mnist`. The `fashion` flag trains the same recipe on
Fashion-MNIST (`fashion_mnist`; the same idx layout) with dropout 0.3 (target >= 0.91). Also the coherence judge of the
audio-visual digits VAEs (configs/av_mnist.py), as the run `runs/.../coherence/mnist_cnn`.
Tiny (a few steps, for tests): `:tiny`.
"""

import ml_collections

from configs.common import TINY_EVAL, TINY_TRAIN, best_checkpoint, run_length, tiny_catalog
from configs.digits_fusion import classifier_config
from configs.mnist import local_idx
from configs.mnist_vae import epochs_to_steps, plain_optimizer
from crossjax.config import variant_flags

# Dropout before the dense256 and the head of the `fashion` flag (the flax recipe has none).
FASHION_DROPOUT = 0.3


def flax_cnn(config: ml_collections.ConfigDict) -> None:
    """The flax examples' conv32-conv64-dense256 image encoder, no dropout, head on top."""
    config.model.image_encoder = "cnn"
    config.model.features = 256
    config.model.hidden = ()
    config.model.dropout = 0.0
    config.model.encoder_kwargs = {
        "image": {"channels": (32, 64), "pool": "flatten", "activate_final": True}
    }


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    flags = variant_flags(variant, ("tiny", "fashion"))
    config = classifier_config(("image",), None)
    config.data.name = "fashion_mnist" if "fashion" in flags else "mnist"
    local_idx(config)  # a local idx folder when data.source.path is set
    flax_cnn(config)
    if "fashion" in flags:  # clothes overfit in 10 epochs where digits do not
        config.model.dropout = FASHION_DROPOUT
    plain_optimizer(config, "sgd", 0.1, momentum=0.9)
    run_length(config, steps=1, batch_size=128, log_every=100, checkpoint_every=1000)
    config.num_train_steps = epochs_to_steps(config, 10)  # 4690
    config.eval_every = config.num_train_steps // 4
    best_checkpoint(config, "accuracy", "max")
    if "tiny" in flags:
        tiny_catalog(config, f"train[:{TINY_TRAIN}]", f"test[:{TINY_EVAL}]")
        flax_cnn(config)
        config.model.features = 32
        config.model.encoder_kwargs = {
            "image": {"channels": (8, 16), "pool": "flatten", "activate_final": True}
        }
        config.optimizer.warmup_steps = 0
        config.eval_every = 0
    return config
