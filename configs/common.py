"""Set-up that the config files share: run length, the embedded digits data, the optimizer,
tiny variants for tests and smoke runs, and the check of a config's variant flags.

Not a config itself (it has no `get_config`); the experiment configs import it.
"""

from __future__ import annotations

import ml_collections

from crossjax.config import variant_flags

DIGITS = "crossjax_digits"
DIGITS_MODALITIES = ("image", "text", "audio")
TINY_TRAIN, TINY_EVAL = 512, 256  # catalog tiny variants: the first examples of each split


def run_length(
    config: ml_collections.ConfigDict,
    *,
    steps: int,
    batch_size: int,
    log_every: int = 100,
    eval_every: int = 0,
    checkpoint_every: int = 500,
) -> None:
    """How long `config` trains and how often it logs, evaluates (0: at the end only) and
    checkpoints."""
    config.num_train_steps = steps
    config.batch_size = batch_size
    config.log_every = log_every
    config.eval_every = eval_every
    config.checkpoint_every = checkpoint_every


def embedded_data(
    config: ml_collections.ConfigDict,
    modalities: tuple[str, ...] = DIGITS_MODALITIES,
    *,
    name: str = DIGITS,
    max_text_len: int = 16,
) -> None:
    """Reads `modalities` of an embedded dataset (`crossjax_digits` unless `name` says
    another), descriptions padded to `max_text_len` words."""
    config.data.name = name
    config.data.modalities = modalities
    config.data.max_text_len = max_text_len


def optimizer(
    config: ml_collections.ConfigDict,
    learning_rate: float,
    *,
    warmup_steps: int | None = None,
    weight_decay: float | None = None,
) -> None:
    """base_config's AdamW with cosine schedule at `learning_rate`; None keeps a default."""
    config.optimizer.learning_rate = learning_rate
    if warmup_steps is not None:
        config.optimizer.warmup_steps = warmup_steps
    if weight_decay is not None:
        config.optimizer.weight_decay = weight_decay


def best_checkpoint(config: ml_collections.ConfigDict, metric: str, mode: str) -> None:
    """Keeps the checkpoint with the best eval `metric` ("max" or "min") besides the latest."""
    config.best_metric = metric
    config.best_mode = mode


def shrink_to_tiny(config: ml_collections.ConfigDict) -> None:
    """A few steps on the tiny dataset variant (`<name>/tiny`): for tests and smoke runs."""
    config.data.name = config.data.name.split("/")[0] + "/tiny"
    run_length(config, steps=8, batch_size=16, log_every=4, checkpoint_every=4)
    config.optimizer.warmup_steps = 2
    # crossjax_digits/tiny has 6 source images per class, held out whole: a fifth of them
    # gives a validation part with every class (evaluators such as crossmodal_images
    # need examples of each).
    config.data.validation_fraction = 0.2


def tiny_catalog(config: ml_collections.ConfigDict, train_split: str, test_split: str) -> None:
    """A few small steps on the given (small) splits of a catalog dataset."""
    run_length(config, steps=8, batch_size=16, log_every=4, checkpoint_every=4)
    config.optimizer.warmup_steps = 2
    config.data.train_split, config.data.test_split = train_split, test_split
    if config.model.name == "fusion_classifier":
        config.model.features = 32
        config.model.hidden = (64,)
        config.model.image_encoder = "mlp"  # compiles fast


def is_tiny(variant: str | None) -> bool:
    """True for the `tiny` variant; ValueError for any other variant (the config has no
    other)."""
    return "tiny" in variant_flags(variant, ("tiny",))
