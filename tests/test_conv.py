"""The matmul-over-patches convolution equals XLA's, values and gradients; batch blocking
cuts each device's share of the batch and changes no result."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from crossjax import sharding
from crossjax.errors import ConfigError
from crossjax.models.conv import (
    BLOCK_BYTES,
    MAX_BLOCKS,
    Conv,
    conv_as_matmul,
    data_shards,
    map_batch_blocks,
    num_batch_blocks,
    pyramid_blocks,
)
from crossjax.models.encoders import CNNImageEncoder, GridCNNImageEncoder


@pytest.mark.parametrize("kernel_size", [(3, 3), (5, 5), (1, 1), (3, 5)])
def test_matmul_over_patches_equals_lax_conv(kernel_size):
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
    kernel = jax.random.normal(jax.random.key(1), (*kernel_size, 3, 4))
    reference = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    chex.assert_trees_all_close(conv_as_matmul(x, kernel), reference, atol=1e-5, rtol=1e-5)


def test_conv_module_matches_flax_conv_with_the_same_parameters():
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 2))
    flax_conv = nn.Conv(5, (3, 3), padding="SAME")
    variables = flax_conv.init(jax.random.key(1), x)
    for impl in ("xla", "patches"):
        ours = Conv(5, (3, 3), impl=impl)
        chex.assert_trees_all_equal_shapes(ours.init(jax.random.key(1), x), variables)
        chex.assert_trees_all_close(
            ours.apply(variables, x), flax_conv.apply(variables, x), atol=1e-5
        )


def test_cnn_gradients_agree_between_paths():
    image = jax.random.uniform(jax.random.key(0), (8, 12, 12, 1))
    xla = CNNImageEncoder(channels=(4, 8), features=6, conv_impl="xla")
    patches = CNNImageEncoder(channels=(4, 8), features=6, conv_impl="patches")
    params = xla.init(jax.random.key(1), image)

    def loss(model, p):
        return jnp.sum(model.apply(p, image) ** 2)

    chex.assert_trees_all_close(
        jax.grad(lambda p: loss(patches, p))(params),
        jax.grad(lambda p: loss(xla, p))(params),
        atol=1e-4,
        rtol=1e-4,
    )


def test_block_count_rules():
    assert jax.default_backend() == "cpu"
    # auto: the fewest blocks whose examples fit in BLOCK_BYTES, dividing the batch
    assert num_batch_blocks(128, 100_352) == 32  # 4 examples of 98 KiB per block
    assert (128 // 32) * 100_352 <= BLOCK_BYTES < (128 // 16) * 100_352
    assert num_batch_blocks(128, 1) == 1  # the whole batch fits
    assert num_batch_blocks(7, 10**9) == 7  # nothing fits: one example per block
    assert num_batch_blocks(1024, 10**9) == MAX_BLOCKS
    assert num_batch_blocks(1, 10**9) == 1
    # an int: at most that many, dividing the batch
    assert num_batch_blocks(128, 10**9, 1) == 1
    assert num_batch_blocks(128, 1, 16) == 16
    assert num_batch_blocks(12, 1, 5) == 4
    assert num_batch_blocks(7, 1, 4) == 1
    for bad in (0, -2, "fast", True, 2.0):
        with pytest.raises(ConfigError, match="batch_blocks"):
            num_batch_blocks(8, 1, bad)


def test_blocks_follow_the_data_axis_of_the_abstract_mesh():
    mesh = sharding.make_mesh(8)
    assert data_shards() == 1
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        assert data_shards() == 8
        # 128 examples over 8 devices: 16 each, 4 per block
        assert num_batch_blocks(128, 100_352) == 4
        assert num_batch_blocks(12, 1, 4) == 1  # 12 does not split over 8 devices


def _per_example(x):  # depends on the whole example, and on nothing else
    return jnp.tanh(x * jnp.mean(x, axis=(1, 2), keepdims=True))[:, ::2]


@pytest.mark.parametrize("blocks", [1, 2, 4, 8])
def test_map_batch_blocks_keeps_examples_in_place(blocks):
    x = jax.random.normal(jax.random.key(0), (16, 6, 5))
    chex.assert_trees_all_close(map_batch_blocks(_per_example, x, blocks), _per_example(x))


def test_map_batch_blocks_refuses_blocks_that_do_not_divide_the_batch():
    with pytest.raises(ValueError, match="3 blocks on 1 devices do not divide a batch of 16"):
        map_batch_blocks(_per_example, jnp.zeros((16, 2, 2)), 3)


def test_map_batch_blocks_keeps_examples_in_place_on_8_devices():
    mesh = sharding.make_mesh(8)
    x = jax.random.normal(jax.random.key(0), (32, 6, 5))
    xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec(sharding.DATA_AXIS)))

    def blocked(x):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return map_batch_blocks(_per_example, x, 2)  # 2 blocks of 2 per device

    compiled = jax.jit(blocked).lower(xs).compile()
    chex.assert_trees_all_close(compiled(xs), _per_example(x))
    hlo = compiled.as_text()
    for collective in ("all-gather", "all-to-all", "collective-permute", "all-reduce"):
        assert collective not in hlo  # no example left its device


@pytest.mark.parametrize("encoder", [CNNImageEncoder, GridCNNImageEncoder])
def test_blocked_conv_stacks_equal_unblocked_values_and_gradients(encoder):
    image = jax.random.uniform(jax.random.key(0), (16, 12, 12, 1))
    blocked = encoder(channels=(4, 8), features=6, batch_blocks=8)
    whole = encoder(channels=(4, 8), features=6, batch_blocks=1)
    params = whole.init(jax.random.key(1), image)
    chex.assert_trees_all_equal_structs(blocked.init(jax.random.key(1), image), params)

    def loss(model, p):
        return jnp.sum(model.apply(p, image) ** 2)

    for model, convs in ((blocked, 8 * 2), (whole, 2)):
        hlo = jax.jit(lambda p, m=model: m.apply(p, image)).lower(params).as_text()
        assert hlo.count("convolution(") == convs
    chex.assert_trees_all_close(
        jax.jit(blocked.apply)(params, image), whole.apply(params, image), atol=1e-6
    )
    g_blocked = jax.jit(jax.grad(lambda p: loss(blocked, p)))(params)
    g_whole = jax.grad(lambda p: loss(whole, p))(params)
    chex.assert_trees_all_close(g_blocked, g_whole, atol=1e-5, rtol=1e-5)
    assert np.abs(np.asarray(g_whole["params"]["Conv_0"]["kernel"])).max() > 0


def test_pyramid_blocks_counts_the_widest_conv_output():
    # 28x28: conv 32 at 28x28 (98 KiB fp32), conv 64 at 14x14 (49 KiB)
    assert pyramid_blocks((128, 28, 28, 1), (32, 64), jnp.float32) == 32
    # 9x9: conv 2 at 9x9 (162 values), conv 64 at the ceil half, 5x5 (1600 values): 6400
    # bytes per example in fp32, so 64 examples (400 KiB) per block; 128 in bf16
    assert pyramid_blocks((256, 9, 9, 1), (2, 64), jnp.float32) == 4
    assert pyramid_blocks((256, 9, 9, 1), (2, 64), jnp.bfloat16) == 2
