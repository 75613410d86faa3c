"""Checks that need a GPU; skipped elsewhere. The suite's conftest defaults JAX to the
CPU, so run them with the GPU selected:

    JAX_PLATFORMS=cuda python -m pytest tests/test_gpu.py
"""

import jax
import pytest

from crossjax.models.conv import num_batch_blocks

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")


def test_conv_stacks_are_not_blocked_on_gpu():
    assert num_batch_blocks(128, 100_352) == 1  # CPU-only cache blocking
    assert num_batch_blocks(128, 100_352, 4) == 4  # an explicit count still applies


def test_bf16_transformer_two_tower_reports_mfu_and_memory(tmp_path):
    from benchmarks import suite

    (row,) = suite.run_suite([("shapes_clip", "transformer", True)], steps=20, workdir=tmp_path)
    assert row["backend"] == "gpu"
    assert row["peak_flops_source"] == "measured bfloat16 matmul"
    assert 0 < row["mfu"] < 1
    assert row["peak_memory_bytes"] > 0
