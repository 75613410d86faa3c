"""Cross-modal generation plumbing: the coherence evaluator (its judge a run of its own),
generation pictures, the Python generator and its errors."""

from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from crossjax import runs
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


def _ctx(data, model, tmp_path, writer=None, restore_run=runs.restore_run_state):
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
        restore_run=restore_run,
    )


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A judge: the tiny image classifier, trained as a run of its own."""
    from crossjax.config import load_config_file

    workdir = tmp_path_factory.mktemp("clf") / "digits_image"
    train_lib.train_and_evaluate(
        load_config_file(f"{CONFIGS / 'digits_image.py'}:tiny"), str(workdir)
    )
    return {"workdir": str(workdir), "trained_with": "configs/digits_image.py:tiny"}


def test_coherence_of_copied_images_is_the_classifier_accuracy(data, classifier, tmp_path):
    coherence = EVALUATORS.get("coherence")
    metrics = coherence(
        _ctx(data, CopyOrBlank(True), tmp_path),
        pairs=("text_to_image", "audio+text_to_image"),
        classifiers={"image": classifier},
    )
    _, reference = runs.evaluate_checkpoint(classifier["workdir"])
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
    with pytest.raises(ConfigError, match="unknown keys"):
        coherence(ctx, classifiers={"image": {**classifier, "workdr": "x"}})
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


def test_coherence_without_a_trained_judge_says_how_to_train_it(data, tmp_path):
    """Evaluation never trains: a judge workdir without checkpoints is a one-line error
    with the exact command, resolved beside the run's workdir, and nothing is created."""
    coherence = EVALUATORS.get("coherence")
    run = tmp_path / "runs" / "digits_mvae"

    def no_restore(workdir):
        raise AssertionError(f"restored {workdir}")

    ctx = _ctx(data, CopyOrBlank(True), run, restore_run=no_restore)
    judge = {"workdir": "coherence/digits_image", "trained_with": "configs/digits_image.py:clean"}
    with pytest.raises(ConfigError) as info:
        coherence(ctx, pairs=("text_to_image",), classifiers={"image": judge})
    expected = tmp_path / "runs" / "coherence" / "digits_image"
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(
        f"train it first with python scripts/train.py --config configs/digits_image.py:clean "
        f"--workdir {expected}"
    )
    assert not expected.exists() and not (tmp_path / "coherence").exists()  # nothing trained
    with pytest.raises(ConfigError, match="configs/<a image classifier config>"):
        coherence(ctx, classifiers={"image": {"workdir": str(tmp_path / "none")}})
    assert not (tmp_path / "none").exists()


def test_coherence_rejects_a_judge_config_to_train(data, tmp_path):
    ctx = _ctx(data, CopyOrBlank(True), tmp_path)
    entry = {"workdir": str(tmp_path / "judge"), "config": "configs/digits_image.py"}
    with pytest.raises(ConfigError, match="no longer trains its judge") as info:
        EVALUATORS.get("coherence")(ctx, classifiers={"image": entry})
    assert "python scripts/train.py --config configs/digits_image.py" in str(info.value)
    assert not (tmp_path / "judge").exists()


def test_relative_judge_needs_a_run_workdir(data, tmp_path):
    ctx = _ctx(data, CopyOrBlank(True), tmp_path)
    ctx.workdir = None
    with pytest.raises(ConfigError, match="absolute path"):
        EVALUATORS.get("coherence")(ctx, classifiers={"image": {"workdir": "judge"}})


def test_judge_restore_comes_from_the_caller(data, classifier, tmp_path):
    from crossjax.errors import CrossjaxError
    from crossjax.evaluators import crossmodal

    crossmodal._CLASSIFIERS.clear()  # not restored yet in this process
    ctx = _ctx(data, CopyOrBlank(True), tmp_path, restore_run=None)
    with pytest.raises(CrossjaxError, match="no restore_run"):
        EVALUATORS.get("coherence")(ctx, classifiers={"image": classifier})


def test_load_generator_restores_a_run_and_its_eval_split(classifier):
    gen = runs.load_generator(classifier["workdir"])
    batch = gen.eval_examples(3)
    assert batch["image"].shape == (3, 8, 8, 1) and "valid" not in batch
    assert gen.spec.modalities == ("image",)
