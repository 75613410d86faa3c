"""2-D convolution with two implementations: XLA's, or one matmul over patches.

XLA:CPU runs the backward pass of a convolution far below its matmul speed. `Conv`
keeps nn.Conv's parameters (`kernel` (kh, kw, C_in, C_out), `bias`) and numerics and
can instead compute the convolution as patches @ kernel: the input is padded, the kh*kw
shifted views are concatenated on the channel axis, and one matmul does the rest.
Measured on this project's 2-core CPU (benchmarks/compare_torch.py, the CNN at batch
128), the patches path is slower (25.2 vs 38.0 steps/s: materialising the patches of
the 32-channel layer costs more than the matmul saves), so "xla" is the default;
"patches" stays selectable for experiments on other machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLS = ("xla", "patches")


def conv_patches(x: jax.Array, kernel_size: Sequence[int]) -> jax.Array:
    """'SAME' patches, stride 1: x (B, H, W, C) -> (B, H, W, kh*kw*C), ordered (i, j, c)."""
    kh, kw = kernel_size
    b, h, w, c = x.shape
    pad_h, pad_w = (kh - 1, kw - 1)
    xp = jnp.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    views = [xp[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)]
    return jnp.concatenate(views, axis=-1)


def conv_as_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 'SAME', stride-1 convolution of x (B, H, W, C) with kernel (kh, kw, C, D) as
    one matmul over patches: (B, H, W, D)."""
    kh, kw, c, d = kernel.shape
    patches = conv_patches(x, (kh, kw))
    return jnp.dot(patches.reshape(-1, kh * kw * c), kernel.reshape(kh * kw * c, d)).reshape(
        (*x.shape[:3], d)
    )


class Conv(nn.Module):
    """'SAME', stride-1 2-D convolution + bias, like nn.Conv(features, kernel_size).

    impl: "xla" (lax.conv) or "patches" (patches @ kernel).
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl not in IMPLS:
            raise ValueError(f"Conv impl={self.impl!r}; valid: {', '.join(IMPLS)}")
        kh, kw = self.kernel_size
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (kh, kw, x.shape[-1], self.features),
            jnp.float32,
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = (t.astype(self.dtype) for t in (x, kernel, bias))
        if self.impl == "patches":
            y = conv_as_matmul(x, kernel)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return y + bias
