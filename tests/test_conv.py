"""The matmul-over-patches convolution equals XLA's, values and gradients."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from crossjax.models.conv import Conv, conv_as_matmul
from crossjax.models.encoders import CNNImageEncoder


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
