"""Cross-modal generation plumbing: the coherence evaluator (classifier trained on demand),
generation pictures, the Python generator and its errors."""

from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from crossjax import train as train_lib
from crossjax.data.pipeline import DataPipeline
from crossjax.errors import ConfigError
from crossjax.evaluators import EVALUATORS, EvalContext
from crossjax.generation import CrossModalGenerator

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class CopyOrBlank(nn.Module):
    """A stand-in generator: the example's real image (copy=True) or a blank one."""

    copy: bool = True

    def __call__(self, batch, *, train=False):
        return {}

    def generate(self, batch, *, sources, targets, sample=False):
        image = batch["image"] if self.copy else jnp.zeros_like(batch["image"])
        return {"recon_mean/image": image}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from crossjax.config import base_config

    config = base_config().data
    config.name = "crossjax_digits/tiny"
    config.modalities = ("image", "text", "audio")
    return DataPipeline(config, batch_size=16, seed=0, vocab_path=None)


def _ctx(data, model, tmp_path, writer=None):
    def batches():
        for batch in data.eval_batches(64, split="test"):  # the split the trainer evaluates
            valid = batch.pop("valid")
            yield batch, valid

    return EvalContext(
        config=None,
        spec=data.spec,
        params={},
        step=0,
        workdir=tmp_path,
        writer=writer,
        predict=None,
        batches=batches,
        model=model,
        vocab=data.vocab,
    )


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """An image classifier trained by the evaluator itself from its config (tiny)."""
    workdir = tmp_path_factory.mktemp("clf") / "digits_image"
    return {"workdir": str(workdir), "config": f"{CONFIGS / 'digits_image.py'}:tiny"}


def test_coherence_of_copied_images_is_the_classifier_accuracy(data, classifier, tmp_path):
    coherence = EVALUATORS.get("coherence")
    metrics = coherence(
        _ctx(data, CopyOrBlank(True), tmp_path),
        pairs=("text_to_image", "audio+text_to_image"),
        classifiers={"image": classifier},
    )
    assert (Path(classifier["workdir"]) / "checkpoints").exists()  # trained on demand
    _, reference = train_lib.evaluate_checkpoint(classifier["workdir"])
    assert metrics["coherence/text_to_image"] == pytest.approx(reference["accuracy"], abs=1e-6)
    assert metrics["coherence/audio+text_to_image"] == metrics["coherence/text_to_image"]
    blank = coherence(
        _ctx(data, CopyOrBlank(False), tmp_path),
        pairs=("text_to_image",),
        classifiers={"image": classifier},
    )["coherence/text_to_image"]
    counts = np.bincount(
        np.concatenate([b["label"] for b, _ in _ctx(data, None, tmp_path).batches()])
    )
    assert blank <= counts.max() / counts.sum() + 1e-9  # one class for every blank image


def test_coherence_errors(data, classifier, tmp_path):
    coherence = EVALUATORS.get("coherence")
    ctx = _ctx(data, CopyOrBlank(True), tmp_path)
    with pytest.raises(ConfigError, match="_to_"):
        coherence(ctx, pairs=("text-image",), classifiers={"image": classifier})
    with pytest.raises(ConfigError, match="depth"):
        coherence(ctx, pairs=("depth_to_image",), classifiers={"image": classifier})
    with pytest.raises(ConfigError, match="no classifier for target 'image'"):
        coherence(ctx, pairs=("text_to_image",), classifiers={})
    with pytest.raises(ConfigError, match="scripts/train.py"):
        coherence(
            ctx,
            pairs=("text_to_image",),
            classifiers={"image": {"workdir": str(tmp_path / "none")}},
        )
    with pytest.raises(ConfigError, match="generate method"):
        coherence(
            _ctx(data, nn.Dense(2), tmp_path),
            pairs=("text_to_image",),
            classifiers={"image": classifier},
        )


def test_crossmodal_images_one_row_per_class(data, tmp_path):
    from crossjax.metric_writer import MetricWriter

    writer = MetricWriter(tmp_path, tensorboard=False)
    EVALUATORS.get("crossmodal_images")(
        _ctx(data, CopyOrBlank(True), tmp_path, writer), pairs=("text_to_image",), per_class=3
    )
    from PIL import Image

    grid = np.asarray(Image.open(tmp_path / "images" / "text_to_image.png"))
    assert grid.shape == (10 * 9 + 1, 3 * 9 + 1)  # 10 classes x 3 images of 8x8, 1 px gaps
    prompts = (tmp_path / "images" / "text_to_image.txt").read_text().splitlines()
    assert len(prompts) == 30 and all(p.startswith("source: ") for p in prompts)


def test_generator_checks_its_inputs(data):
    gen = CrossModalGenerator(CopyOrBlank(True), {}, data.spec, data.vocab)
    batch = gen.text_batch(["a handwritten seven", "the digit 3"])
    assert batch["text"].shape == (2, data.spec.max_text_len)
    assert gen.decode_text(batch["text"])[1] == "the digit 3"
    with pytest.raises(ConfigError, match="depth"):
        gen(batch, sources=("text",), targets=("depth",))
    with pytest.raises(ConfigError, match="no 'audio'"):
        gen(batch, sources=("audio",), targets=("image",))
    out = gen(batch, sources=("text",), targets=("image",))
    assert out["image"].shape == (2, 8, 8, 1) and not out["image"].any()  # zeros: no image given


def test_misspelt_evaluator_kwarg_is_a_config_error():
    from crossjax.evaluators import parse_evaluators

    ((name, _, kwargs),) = parse_evaluators([("coherence", {"pairs": ("text_to_image",)})])
    assert name == "coherence" and kwargs == {"pairs": ("text_to_image",)}
    with pytest.raises(
        ConfigError, match="evaluator 'coherence' has no keyword argument 'pair'; valid: pairs"
    ):
        parse_evaluators([("coherence", {"pair": ("text_to_image",)})])
