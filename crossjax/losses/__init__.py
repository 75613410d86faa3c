"""Loss functions, found by name in `LOSSES` or by `"package.module:function"` path.

The contract (per-example values, masks, declared needs) is in `crossjax.losses.base`;
importing this package registers the built-in losses.
"""

from crossjax.losses import (
    classification,
    consistency,
    contrastive,
    generative,
    multimodal,
    semi_supervised_vae,
    sequence,
)
from crossjax.losses.base import (
    LOSSES,
    CombinedLoss,
    LossContext,
    LossTerm,
    Metrics,
    batch_level,
    build_loss,
    masked_by,
    require_output,
)

__all__ = [
    "LOSSES",
    "CombinedLoss",
    "LossContext",
    "LossTerm",
    "Metrics",
    "batch_level",
    "build_loss",
    "masked_by",
    "require_output",
    "classification",
    "consistency",
    "contrastive",
    "generative",
    "multimodal",
    "semi_supervised_vae",
    "sequence",
]
