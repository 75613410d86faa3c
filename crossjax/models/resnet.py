"""ResNets in torchvision's layout, so torchvision checkpoints convert one tensor to one leaf.

Image encoders "resnet18" (`BasicBlock`, stages (2, 2, 2, 2)) and "resnet50"
(`Bottleneck`, stages (3, 4, 6, 3)) map `image` (B, H, W, C) to (B, features) through
torchvision's stem (7x7/2 conv, BatchNorm, ReLU, 3x3/2 max pool), four stages, a global
average pool and the `fc` layer (features = torchvision's `num_classes`). Submodules carry
torchvision's names with list indices joined by "_" (`layer1.0.conv1` -> `layer1_0/conv1`),
which is what `crossjax.models.pretrained` relies on. `width` scales every stage (64 is
torchvision's); the tests use tiny widths.

BatchNorm keeps its running statistics in the `batch_stats` collection, apart from
`params`: apply with `{"params": ..., "batch_stats": ...}`. With `train=False` (or
`frozen_statistics=True`, for fine-tuning) the running statistics normalise and nothing is
written; with `train=True` batch statistics normalise and the running ones are updated,
so `batch_stats` must then be mutable. Momentum and epsilon are torchvision's (0.1, 1e-5).
The trainer carries `batch_stats` in its train state (crossjax.models.state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.errors import ConfigError
from crossjax.models.encoders import IMAGE_ENCODERS

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "small")


def _conv(features: int, kernel: int, stride: int, name: str, dtype: Any) -> nn.Conv:
    """torchvision's conv: bias-free, symmetric zero padding kernel // 2."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        name=name,
    )


def _norm(name: str, use_running_average: bool, dtype: Any) -> nn.BatchNorm:
    """torch.nn.BatchNorm2d: momentum 0.1 (flax's 0.9), eps 1e-5."""
    return nn.BatchNorm(
        use_running_average=use_running_average,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        name=name,
    )


class ResidualBlock(nn.Module):
    """torchvision's BasicBlock ("basic": two 3x3 convs) or Bottleneck ("bottleneck": 1x1,
    3x3 strided as in v1.5, 1x1 to 4 * planes), each conv followed by BatchNorm, plus the
    residual (`downsample_0/1`, a strided 1x1 conv + BatchNorm, when the shape changes):
    x (B, H, W, C) -> (B, ceil(H / stride), ceil(W / stride), planes * expansion)."""

    block: str
    planes: int
    stride: int = 1
    use_running_average: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ura, dt, p, s = self.use_running_average, self.dtype, self.planes, self.stride
        if self.block == "basic":
            out = p
            y = nn.relu(_norm("bn1", ura, dt)(_conv(p, 3, s, "conv1", dt)(x)))
            y = _norm("bn2", ura, dt)(_conv(p, 3, 1, "conv2", dt)(y))
        else:
            out = 4 * p
            y = nn.relu(_norm("bn1", ura, dt)(_conv(p, 1, 1, "conv1", dt)(x)))
            y = nn.relu(_norm("bn2", ura, dt)(_conv(p, 3, s, "conv2", dt)(y)))
            y = _norm("bn3", ura, dt)(_conv(out, 1, 1, "conv3", dt)(y))
        if s != 1 or x.shape[-1] != out:
            x = _norm("downsample_1", ura, dt)(_conv(out, 1, s, "downsample_0", dt)(x))
        return nn.relu(y + x)


class ResNet(nn.Module):
    """torchvision's ResNet: image (B, H, W, C) -> (B, features). See the module doc."""

    block: str = "basic"
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    features: int = 1000
    frozen_statistics: bool = False
    # The stem: torchvision's 7x7/2 conv and 3x3/2 max pool ("imagenet", what pretrained
    # weights expect), or "small": one 3x3 conv of stride `stem_stride`, no pool, the
    # usual variant for 28x28-32x32 images (stride 1 keeps the maps 4x larger than the
    # imagenet stem, at 16x its FLOPs in the stages; stride 2: 2x larger, 4x the FLOPs).
    stem: str = "imagenet"
    stem_stride: int = 1
    dtype: Any = jnp.float32

    def check(self, input_shape: Sequence[int]) -> None:
        """ValueError unless the image is (H, W, C) and the fields are valid."""
        if self.block not in BLOCKS:
            raise ValueError(f"block={self.block!r}; valid: {', '.join(BLOCKS)}")
        if self.stem not in STEMS:
            raise ValueError(f"stem={self.stem!r}; valid: {', '.join(STEMS)}")
        if self.stem_stride < 1:
            raise ValueError(f"stem_stride={self.stem_stride}; use 1 or more")
        if len(input_shape) != 3:
            raise ValueError(f"reads images (H, W, C) but the image is {tuple(input_shape)}")

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        chex.assert_rank(image, 4)
        if not self.is_initializing() and "batch_stats" not in self.variables:
            raise ConfigError(
                "ResNet needs its BatchNorm statistics: apply it with "
                "{'params': ..., 'batch_stats': ...} (a train state's model_state holds them)"
            )
        ura = self.frozen_statistics or not train
        small = self.stem == "small"
        kernel, stride = (3, self.stem_stride) if small else (7, 2)
        x = _conv(self.width, kernel, stride, "conv1", self.dtype)(image.astype(self.dtype))
        x = nn.relu(_norm("bn1", ura, self.dtype)(x))
        if not small:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, blocks in enumerate(self.stage_sizes):
            for i in range(blocks):
                x = ResidualBlock(
                    self.block,
                    self.width * 2**stage,
                    stride=2 if stage > 0 and i == 0 else 1,
                    use_running_average=ura,
                    dtype=self.dtype,
                    name=f"layer{stage + 1}_{i}",
                )(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.features, dtype=self.dtype, name="fc")(x)


@IMAGE_ENCODERS.register("resnet18")
class ResNet18(ResNet):
    """torchvision's resnet18: BasicBlock, stages (2, 2, 2, 2)."""

    block: str = "basic"
    stage_sizes: Sequence[int] = (2, 2, 2, 2)


@IMAGE_ENCODERS.register("resnet50")
class ResNet50(ResNet):
    """torchvision's resnet50: Bottleneck, stages (3, 4, 6, 3)."""

    block: str = "bottleneck"
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
