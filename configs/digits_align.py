"""python scripts/train.py --config configs/digits_align.py --workdir runs/digits_align

The fused digits classifier plus a user-written loss from examples/my_losses.py that
aligns the image and text embeddings: how to prototype a loss without touching crossjax.
Tiny variant for tests: `--config configs/digits_align.py:tiny`.
"""

from configs.digits_fusion import get_config as fusion_config


def get_config(variant: str | None = None):
    config = fusion_config(variant)
    config.losses = (
        ("cross_entropy", 1.0),
        ("examples.my_losses:embedding_alignment", 0.1, {"pair": ("image", "text")}),
    )
    return config
