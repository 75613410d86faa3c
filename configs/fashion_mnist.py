"""python scripts/train.py --config configs/fashion_mnist.py --workdir runs/fashion_mnist

Fashion-MNIST from the TFDS catalog (`fashion_mnist`: 28x28 grey clothing, 10 classes)
with the fusion classifier on `image` (CNN encoder). Preparing it once needs TensorFlow
(`pip install 'crossjax[tf]'`). Or read your local copy of the four idx files (no
TensorFlow; Debian's `dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist):
`--config.data.source.path=/usr/share/datasets/fashion-mnist`.
Tiny: `--config configs/fashion_mnist.py:tiny`.

`resnet18`: ResNet-18 trained from scratch, its BatchNorm statistics carried in the train
state (target >= 0.93 test accuracy):

    python scripts/train.py --config configs/fashion_mnist.py:resnet18 \
        --workdir runs/fashion_mnist_resnet18 \
        --config.data.source.path=/usr/share/datasets/fashion-mnist

Sized for about half an hour on 2 CPU cores: torchvision's block layout at width 16 (a
quarter of torchvision's 64) behind a 3x3 stride-1 stem without max pool, whose 28x28 maps
are what clothes need (the 7x7/2 stem and pool leave 7x7 maps for the stages; the small
stem costs 16x their FLOPs, the quarter width gives them back); SGD with momentum 0.9 at
lr 0.1 on a cosine schedule, L2 weight decay 5e-4, batch 128, 3,500 updates (8.3 passes
over the 54k training images left after the 10% validation hold-out, on which the best
checkpoint is chosen; test is read once at the end). Shifts of up to 2 pixels and
left-right flips (`data.augment`, drawn in the train step). Augmentation and weight decay
were each chosen on validation; the figures, with and without them, are in the README
and results/reproductions.md.
`resnet18_tiny`: the same recipe at width 4 for a few steps (tests).
"""

import ml_collections

from configs.mnist import catalog_classifier, local_idx
from crossjax.config import variant_flags

RESNET_WIDTH = 16
RESNET_STEPS = 3500
RESNET_WEIGHT_DECAY = 5e-4  # L2, as torch's SGD applies it (the ResNet papers' 1e-4..5e-4)


def resnet18(config: ml_collections.ConfigDict, *, tiny: bool) -> None:
    """The ResNet-18 recipe of the `resnet18` flag (see the module doc)."""
    config.model.image_encoder = "resnet18"
    config.model.encoder_kwargs = {
        "image": {"stem": "small", "width": 4 if tiny else RESNET_WIDTH},
    }
    config.model.features = 8 * (4 if tiny else RESNET_WIDTH)  # the last stage's channels
    config.model.hidden = ()
    config.model.dropout = 0.0
    config.optimizer.name = "sgd"
    config.optimizer.b1 = 0.9  # momentum
    config.optimizer.learning_rate = 0.1
    config.optimizer.schedule = "cosine"
    config.optimizer.grad_clip_norm = 0.0
    config.optimizer.weight_decay = RESNET_WEIGHT_DECAY
    config.data.augment = {"image": {"max_shift": 2, "flip": True}}
    if tiny:
        config.model.encoder_kwargs["image"]["stage_sizes"] = (1, 1)  # compiles in seconds
        return
    config.optimizer.warmup_steps = 100
    config.num_train_steps = RESNET_STEPS
    config.eval_every = 700
    config.checkpoint_every = 700


def get_config(variant: str | None = None):
    flags = variant_flags(variant, ("tiny", "resnet18"))
    config = local_idx(
        catalog_classifier("fashion_mnist", ("image",), "tiny" if "tiny" in flags else None)
    )
    if "resnet18" in flags:
        resnet18(config, tiny="tiny" in flags)
    return config
