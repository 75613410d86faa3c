"""2-D convolution, and the batch blocking that makes convolution stacks fast on CPU.

`Conv` keeps nn.Conv's parameters (`kernel` (kh, kw, C_in, C_out), `bias`) and numerics
and has two implementations: XLA's ("xla", the default) or one matmul over patches
("patches": the input is padded, the kh*kw shifted views are concatenated on the channel
axis, and one matmul does the rest). On this project's 2-core CPU the patches path is
slower (25.2 vs 38.0 CNN steps/s in benchmarks/compare_torch.py: materialising the
patches of a 32-channel layer costs more than the matmul saves); it stays selectable
for experiments on other machines.

What does make XLA:CPU's convolutions fast is *batch blocking* (`map_batch_blocks`):
running a per-example stack of layers (conv, ReLU, pool, ...) on blocks of a few
examples at a time, so that each block's activations stay in the core's cache, instead
of on the whole batch at once. XLA's kernel-gradient convolution is the main winner
(9.2 -> 6.2 ms for a 3x3 32 -> 64 conv at batch 128 when split into 16 blocks), and
the whole CNN step of compare_torch.py goes from 40 to 59 steps/s (PyTorch: 50-54),
shapes_clip's from 60 to 34 ms. Blocks are cut within each device's share of the batch
(the `data` axis of the abstract mesh that the trainer sets while tracing), so no
example moves between devices. The results are those of the unblocked stack, up to
float summation order in the parameter gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjax.errors import ConfigError
from crossjax.sharding import DATA_AXIS

IMPLS = ("xla", "patches")

# Batch blocking: a block's largest activation should take at most half of a core's L2
# cache (1 MiB here), leaving room for the layer's input, masks and gradients. Measured on
# the compare_torch CNN (largest activation 98 KiB per example, 16 blocks of 8 = 0.8 MiB)
# in one process: 32 blocks of 4 examples ran 59 steps/s, 16 of 8 56, 64 of 2 55, no
# blocking 40. MAX_BLOCKS bounds the unrolled program (compile time) for large examples.
BLOCK_BYTES = 1 << 19
MAX_BLOCKS = 32


def data_shards() -> int:
    """How many ways the batch is split: the size of the `data` axis of the abstract mesh
    set while tracing (the trainer sets its mesh), else 1."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return 1
    return mesh.shape[DATA_AXIS]


def num_batch_blocks(batch: int, example_bytes: int, blocks: int | str = "auto") -> int:
    """How many blocks `map_batch_blocks` cuts each device's share of `batch` into.

    blocks: "auto" = on CPU, the fewest blocks (at most MAX_BLOCKS) whose examples'
    largest activations (`example_bytes` each) fit in BLOCK_BYTES, and 1 on other
    backends; an int n = at most n blocks (1 turns blocking off). Either way the count
    divides the per-device batch, so a batch of odd size gets fewer blocks.
    """
    if blocks == "auto":
        if jax.default_backend() != "cpu":
            return 1
        limit = MAX_BLOCKS
    elif isinstance(blocks, int) and not isinstance(blocks, bool) and blocks >= 1:
        limit = blocks
    else:
        raise ConfigError(f"batch_blocks={blocks!r}; use 'auto' or a positive int (1 = off)")
    shards = data_shards()
    if batch % shards:
        return 1
    local = batch // shards
    divisors = [n for n in range(1, min(limit, local) + 1) if local % n == 0]
    if blocks != "auto":
        return divisors[-1]
    fitting = [n for n in divisors if (local // n) * example_bytes <= BLOCK_BYTES]
    return fitting[0] if fitting else divisors[-1]


def map_batch_blocks(fn: Callable[[jax.Array], jax.Array], x: jax.Array, blocks: int) -> jax.Array:
    """fn(x) for a per-example fn, computed on `blocks` blocks of each device's share of
    the batch (see num_batch_blocks) and put back in order. x: (B, ...)."""
    if blocks <= 1:
        return fn(x)
    shards = data_shards()
    b = x.shape[0]
    if b % (shards * blocks):
        raise ValueError(f"{blocks} blocks on {shards} devices do not divide a batch of {b}")
    size = b // shards // blocks
    local = x.reshape(shards, b // shards, *x.shape[1:])  # dim 0 follows the data axis
    outs = [
        fn(local[:, i * size : (i + 1) * size].reshape(shards * size, *x.shape[1:]))
        for i in range(blocks)
    ]
    out = jnp.concatenate([o.reshape(shards, size, *o.shape[1:]) for o in outs], axis=1)
    return out.reshape(b, *out.shape[2:])


def pyramid_blocks(
    shape: Sequence[int], channels: Sequence[int], dtype: Any, blocks: int | str = "auto"
) -> int:
    """`num_batch_blocks` for a stack on inputs of `shape` (B, H, W, C) whose i-th conv,
    `channels[i]` wide, runs at 1 / 2^i of H and W (2x2 pools between the convs)."""
    _, h, w, _ = shape
    largest = max(
        math.ceil(h / 2**i) * math.ceil(w / 2**i) * width for i, width in enumerate(channels)
    )
    return num_batch_blocks(shape[0], largest * jnp.dtype(dtype).itemsize, blocks)


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
