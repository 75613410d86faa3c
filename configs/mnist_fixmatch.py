"""python scripts/train.py --config configs/mnist_fixmatch.py --workdir runs/mnist_fixmatch \
    --config.data.source.path=/data/mnist

FixMatch (Sohn et al. 2020) on MNIST with 100 labels (10 per class, drawn from the
training part after the validation hold-out): the MNIST CNN of configs/mnist_cnn.py,
every batch LABELED labelled rows + the rest unlabelled; the `fixmatch` loss
(crossjax/losses/consistency.py) learns the labelled rows' weakly augmented view and
teaches each row's strongly augmented view the weak view's confident (>= 0.95)
pseudo-label. Checkpoint chosen on validation accuracy (fully labelled), test read once
at the end. Another label count: `--config.data.num_labels=600`
(scripts/few_labels.py sweeps 100, 600, 1000, 3000).

Variants: `supervised` (the baseline: the same CNN and steps on the labelled examples
alone, plain cross-entropy), `tiny` (a few steps for tests; reads an idx folder).
"""

import ml_collections

from configs import mnist_cnn
from configs.common import run_length
from crossjax.config import variant_flags

NUM_LABELS = 100
# Rows per step: LABELED labelled + (BATCH - LABELED) unlabelled (FixMatch's mu = 3),
# each seen as a weak and a strong view (2 x BATCH images through the CNN per step).
BATCH, LABELED = 128, 32
# 1,200 steps of ~0.3 s on a 2-core CPU (probe: results/config_choices.md,
# "mnist_fixmatch"): ~6 min of training, plus start-up and three validation passes whose loss
# also runs the two augmented views, so a run stays near 8.5 minutes.
STEPS = 1200
FIXMATCH = {"threshold": 0.95, "unlabeled_weight": 1.0}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    flags = variant_flags(variant, ("tiny", "supervised"))
    tiny = "tiny" in flags
    config = mnist_cnn.get_config("tiny" if tiny else None)
    config.data.num_labels = NUM_LABELS
    if "supervised" in flags:  # every row labelled: the labelled pool, cycled
        config.data.labeled_batch_size = BATCH
        config.losses = (("cross_entropy", 1.0),)
    else:
        config.data.labeled_batch_size = LABELED
        config.losses = (("fixmatch", 1.0, FIXMATCH),)
    run_length(config, steps=STEPS, batch_size=BATCH, eval_every=400, checkpoint_every=400)
    if tiny:
        config.data.num_labels = 10
        config.data.labeled_batch_size = 16 if "supervised" in flags else 4
        run_length(config, steps=2, batch_size=16, log_every=1, checkpoint_every=2)
    return config
