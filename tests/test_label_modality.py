"""The label as one more modality of the multimodal VAEs: masked by `present/label`,
classified from the other modalities, and a tiny `:mopoe_labels_tiny` run of
configs/av_mnist.py on the local pairing fixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import av_mnist
from crossjax import train as train_lib
from crossjax.data.spec import DataSpec
from crossjax.errors import ConfigError
from crossjax.losses import LossContext, build_loss
from crossjax.models import build_model
from tests.test_av_digits import write_sources

SPEC = DataSpec(
    modalities=("image", "audio"),
    num_classes=4,
    image_shape=(4, 4, 1),
    audio_shape=(512,),
    sample_rate=8000,
)
LOSS_OF = {"poe": "mvae", "mopoe": "mopoe", "moe": "mmvae"}


def _model(posterior):
    fields = {
        "name": "multimodal_vae",
        "modalities": ("image", "audio", "label"),
        "posterior": posterior,
        "features": 8,
        "decoder_hidden": (8,),
        "latent_dim": 3,
    }
    return build_model(fields, SPEC)


def _batch(labels):
    rng = np.random.default_rng(0)
    return {
        "image": jnp.asarray(rng.random((5, 4, 4, 1)), jnp.float32),
        "audio": jnp.asarray(rng.normal(size=(5, 512)), jnp.float32),
        "label": jnp.asarray(labels, jnp.int32),
        "present/label": jnp.asarray([True, False, True, False, True]),
    }


@pytest.mark.parametrize("posterior", ["poe", "mopoe", "moe"])
def test_an_unlabelled_examples_label_changes_no_output_and_no_gradient(posterior):
    model = _model(posterior)
    params = jax.jit(model.init)(
        {"params": jax.random.key(0), "sample": jax.random.key(1)}, _batch([0] * 5)
    )
    loss = build_loss([(LOSS_OF[posterior], 1.0)])
    ctx = LossContext(step=jnp.zeros((), jnp.int32), rng=jax.random.key(0))

    def total(p, batch):
        outputs = model.apply(p, batch, train=True, rngs={"sample": jax.random.key(2)})
        return jnp.mean(loss(outputs, batch, ctx)[0]), outputs

    grad = jax.jit(jax.grad(total, has_aux=True))  # compiled once for the three label sets

    def run(labels):
        return grad(params, _batch(labels))

    grads, outputs = run([0, 1, 2, 3, 0])
    hidden_grads, hidden_outputs = run([0, 3, 2, 1, 0])  # rows 1 and 3 are unlabelled
    for a, b in zip(jax.tree.leaves(hidden_grads), jax.tree.leaves(grads), strict=True):
        np.testing.assert_array_equal(a, b)
    for key in outputs:
        if key != "target/label":  # the zeroed target is the only place a label shows
            np.testing.assert_array_equal(hidden_outputs[key], outputs[key], err_msg=key)
    shown_grads, shown = run([1, 1, 2, 3, 0])  # row 0 is labelled
    assert any(
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(shown_grads), jax.tree.leaves(grads), strict=True)
    )
    # Classification reads the other modalities only: a shown label does not change it.
    np.testing.assert_array_equal(shown["logits"], outputs["logits"])
    assert outputs["logits"].shape == outputs["label_logits/image"].shape == (5, 4)


def test_label_modality_needs_labels():
    with pytest.raises(ConfigError, match="no class labels"):
        build_model(
            {"name": "multimodal_vae", "modalities": ("image", "label")},
            DataSpec(modalities=("image",), image_shape=(4, 4, 1)),
        )


def test_av_mnist_label_and_weak_variants():
    config = av_mnist.get_config("mopoe_labels")
    assert config.model.modalities[-1] == "label" and config.data.num_labels == 100
    assert config.data.labeled_batch_size == config.batch_size // 4
    assert config.losses[0][2]["weights"]["label"] == av_mnist.LABEL_WEIGHT
    assert config.best_metric == "label_inference/accuracy_image"
    assert config.num_train_steps == av_mnist.VAE_STEPS["mopoe"] // 2
    baseline = av_mnist.get_config("image_labels")  # supervised only: the labelled rows
    assert baseline.data.labeled_batch_size == baseline.batch_size
    assert av_mnist.get_config("mvae_weak").data.paired_fraction == av_mnist.PAIRED_FRACTION


def test_mopoe_labels_tiny_trains_and_infers_the_label(tmp_path):
    config = av_mnist.get_config("mopoe_labels_tiny")
    sources = write_sources(tmp_path / "sources")
    config.data.pairing_sources.mnist, config.data.pairing_sources.spoken_digit = sources
    config.data.data_dir = str(tmp_path / "data")
    config.num_devices, config.num_train_steps, config.batch_size = 1, 2, 8
    config.data.labeled_batch_size = 2
    skip = ("coherence", "crossmodal_images")  # no judge run here (see test_av_digits)
    config.evaluators = tuple(e for e in config.evaluators if e[0] not in skip)
    metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))["test"]
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1
    for m in ("image", "audio", "text"):
        assert 0 <= metrics[f"label_inference/accuracy_{m}"] <= 1
