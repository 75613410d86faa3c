"""python scripts/train.py --config configs/mnist_m2.py --workdir runs/mnist_m2 \
    --config.data.source.path=/data/mnist

M2 (Kingma et al. 2014, "Semi-supervised learning with deep generative models") on MNIST
with 100 labels: 10 per class, drawn by data.label_seed from the 54k training examples
left after the 10% validation hold-out; the other 53,900 keep their image only. Every
batch of 128 holds 32 labelled examples (the labelled pool reshuffled each pass) and 96
unlabelled ones. The model: classifier 784-500-500-10, encoder q(z|x,y) 784(+y)-500-50,
decoder (z, y)-500-784 with a Bernoulli likelihood on the grey levels. Accuracy comes from
q(y|x) on the fully labelled validation and test parts; the checkpoint with the best
validation accuracy is kept.

Other label counts are variants, `--config configs/mnist_m2.py:600` (100, 600, 1000,
3000), which also set the loss's alpha for that count (`m2_alpha`). The real MNIST idx files:
`data.source.path` (or TFDS `mnist` by name). Tiny (a few steps, for tests):
`--config configs/mnist_m2.py:tiny`.
"""

import ml_collections

from configs.common import TINY_EVAL, TINY_TRAIN, best_checkpoint, run_length, tiny_catalog
from configs.mnist import local_idx
from crossjax.config import base_config

LIKELIHOOD = "bernoulli"
LABEL_COUNTS = (100, 600, 1000, 3000)  # the paper's table (Kingma et al. 2014, table 1)
NUM_TRAIN = 54_000  # MNIST train minus the 10% validation hold-out
# The classifier term weighs ALPHA_SCALE x the paper's balance: in 2,000 steps the paper's
# alpha leaves q(y|x) nearly untrained. Chosen on validation at 100 labels (seed 0):
# accuracy 0.6815 with x1 (alpha 0.30), 0.8065 with x100 (alpha 30); results/config_choices.md.
ALPHA_SCALE = 100.0


def parse_variant(variant: str | None) -> tuple[int, bool]:
    """(number of labels, tiny) of a variant such as "600" or "tiny"; ValueError otherwise."""
    parts = variant.split("_") if variant else []
    counts = [int(p) for p in parts if p.isdigit() and int(p) in LABEL_COUNTS]
    rest = [p for p in parts if not (p.isdigit() and int(p) in LABEL_COUNTS)]
    if len(counts) > 1 or set(rest) - {"tiny"} or len(rest) > 1:
        raise ValueError(
            f"unknown config variant {variant!r} of configs/mnist_m2.py; valid: a label count "
            f"({', '.join(map(str, LABEL_COUNTS))}) and/or tiny, joined by '_'"
        )
    return (counts[0] if counts else LABEL_COUNTS[0]), bool(rest)


def m2_alpha(
    num_labels: int, batch_size: int, labeled_batch_size: int, num_train: int = NUM_TRAIN
) -> float:
    """The paper's alpha = 0.1 N for our batch mix. The paper's objective (eq. 9) sums L
    over the num_labels labelled and U over the N - num_labels unlabelled examples and adds
    alpha times the MEAN cross-entropy over the labelled ones: the classifier term weighs
    0.1 N against N - num_labels for U. A batch of l labelled and u unlabelled rows weighs
    alpha' * l against u, so alpha' = 0.1 * N / (N - num_labels) * u / l (0.30 for 32 of
    128 at 100 labels: each labelled example, drawn 180x as often as an unlabelled one,
    then weighs 0.1 N / num_labels = 54 unlabelled examples, as in the paper), times
    ALPHA_SCALE."""
    unlabelled = batch_size - labeled_batch_size
    paper = 0.1 * num_train / (num_train - num_labels) * max(unlabelled, 1) / labeled_batch_size
    return ALPHA_SCALE * paper


def use_m2(
    config: ml_collections.ConfigDict,
    *,
    hidden: tuple[int, ...],
    classifier_hidden: tuple[int, ...],
    latent_dim: int,
) -> None:
    """Makes `config` train M2 on `image` with the `m2` loss, alpha from the label count."""
    config.model = ml_collections.ConfigDict(
        {
            "name": "m2",
            "modality": "image",
            "hidden": hidden,
            "classifier_hidden": classifier_hidden,
            "latent_dim": latent_dim,
            "likelihood": LIKELIHOOD,
        }
    )
    alpha = m2_alpha(config.data.num_labels, config.batch_size, config.data.labeled_batch_size)
    config.losses = (("m2", 1.0, {"alpha": alpha, "modality": "image", "likelihood": LIKELIHOOD}),)
    config.evaluators = ()
    best_checkpoint(config, "accuracy", "max")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    num_labels, tiny = parse_variant(variant)
    config = base_config()
    config.data.name = "mnist"
    local_idx(config)  # a local idx folder when data.source.path is set
    config.data.modalities = ("image",)
    config.data.num_labels = num_labels
    config.data.labeled_batch_size = 32
    # 2,000 steps: one run in 6-9 minutes on the shared 2-core CPU. Step time probes on
    # real MNIST: 196 ms median over 100 steps (scripts/benchmark.py, machine busy) and
    # ~95 ms in a 150-step training run (quieter); 4.3 GFLOP per step, as the class
    # enumeration decodes 128 x 10 images. Start-up (label draw, caching 54k images) and
    # the evaluations add about 2 minutes.
    run_length(config, steps=2000, batch_size=128, log_every=200, checkpoint_every=1000)
    config.eval_every = 500
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.weight_decay = 0.0
    use_m2(config, hidden=(500,), classifier_hidden=(500, 500), latent_dim=50)
    if tiny:
        tiny_catalog(config, f"train[:{TINY_TRAIN}]", f"test[:{TINY_EVAL}]")
        config.data.num_labels = 10
        config.data.labeled_batch_size = 4
        config.eval_every = 0
        use_m2(config, hidden=(32,), classifier_hidden=(32,), latent_dim=4)
    return config
