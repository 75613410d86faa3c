"""Declared needs of losses and evaluators, and the one-line pre-flight error."""

import functools

import pytest

from crossjax.errors import ConfigError
from crossjax.evaluators import EVALUATORS, evaluator_requirements, parse_evaluators
from crossjax.requirements import Requires, check_requirements, requirements_of, requires

# What a shapes captioner run over COCO-style files gives: no scene attributes.
CAPTIONER_BATCH = ("image", "label", "text", "text_mask")
CAPTIONER_OUTPUTS = ("logits",)


def test_requires_static_callable_partial_and_undeclared():
    @requires(Requires(batch=("label",), outputs=("logits",)))
    def fixed(outputs, batch, ctx):
        return None

    @requires(lambda kw: Requires(batch=(kw.get("modality", "image"),)))
    def per_modality(outputs, batch, ctx, *, modality="image"):
        return None

    def undeclared(outputs, batch, ctx):
        return None

    assert requirements_of(fixed) == Requires(("label",), ("logits",))
    assert requirements_of(per_modality) == Requires(batch=("image",))
    assert requirements_of(per_modality, {"modality": "audio"}).batch == ("audio",)
    partial = functools.partial(per_modality, modality="text")
    assert requirements_of(partial).batch == ("text",)
    assert requirements_of(partial, {"modality": "audio"}).batch == ("audio",)  # kwargs win
    assert requirements_of(undeclared) == Requires()
    assert Requires(("a",), ("x",)) + Requires(("b", "a"), ()) == Requires(("a", "b"), ("x",))
    with pytest.raises(TypeError, match="tuple of keys"):
        Requires(batch="label")


def test_check_requirements_names_every_missing_key_on_one_line():
    owners = [
        ("evaluator 'zero_shot'", Requires(batch=("attr/color", "label"), outputs=("emb/image",))),
        ("loss 'clip'", Requires(outputs=("emb/image", "emb/audio", "emb/text"))),
        ("loss 'ce'", Requires(batch=("label",), outputs=("logits",))),
    ]
    with pytest.raises(ConfigError) as info:
        check_requirements(owners, ("image", "label", "text", "text_mask"), ("emb/image",))
    assert str(info.value) == (
        "evaluator 'zero_shot' needs batch key 'attr/color' (the data gives: image, label, "
        "text, text_mask); loss 'clip' needs model outputs 'emb/audio', 'emb/text' (the model "
        "gives: emb/image); loss 'ce' needs model output 'logits' (the model gives: emb/image)"
    )
    check_requirements(owners[2:], ("label",), ("logits",))  # all there: no error


def test_captioner_without_attributes_fails_before_training():
    parsed = parse_evaluators([("captioning", {"attribute_accuracy": True})])
    with pytest.raises(ConfigError) as info:
        check_requirements(evaluator_requirements(parsed), CAPTIONER_BATCH, CAPTIONER_OUTPUTS)
    assert str(info.value) == (
        "evaluator 'captioning' needs batch keys 'attr/num_objects', 'attr/color', "
        "'attr/shape', 'attr/size', 'attr/relation' (the data gives: image, label, text, "
        "text_mask)"
    )
    check_requirements(
        evaluator_requirements(parse_evaluators(["captioning"])),
        CAPTIONER_BATCH,
        CAPTIONER_OUTPUTS,
    )


@pytest.mark.parametrize(
    "entry, expected",
    [
        (("zeroshot", {"label_key": "attr/color", "class_names": ["red"]}),
         Requires(batch=("attr/color",), outputs=("emb/image",))),
        (("zeroshot", {"class_names": ["a"], "filter_key": "attr/num_objects"}),
         Requires(batch=("label", "attr/num_objects"), outputs=("emb/image",))),
        (("linear_probe", {"embedding": "z_mean"}),
         Requires(batch=("label",), outputs=("z_mean",))),
        ("retrieval", Requires(outputs=("emb/image",))),
        (("coherence", {"pairs": ("text_to_image", "audio+image_to_text")}),
         Requires(batch=("label", "text", "audio", "image"))),
        ("crossmodal_images", Requires(batch=("label", "text"))),
        (("reconstruction_images", {"modality": "audio"}),
         Requires(batch=("audio",), outputs=("recon/audio",))),
        ("iwae_nll", Requires(batch=("image",), outputs=("z", "z_mean", "z_logvar", "recon/image"))),
        ("robustness", Requires(batch=("label",), outputs=("logits",))),
        (("robustness", {"modalities": ("image", "text")}),
         Requires(batch=("label", "image", "text"), outputs=("logits",))),
        ("captioning", Requires()),
    ],
)  # fmt: skip
def test_evaluators_declare_exactly_what_they_read(entry, expected):
    ((_, needs),) = evaluator_requirements(parse_evaluators([entry]))
    assert needs == expected


def test_every_built_in_evaluator_declares_its_needs():
    assert all(hasattr(EVALUATORS.get(name), "requires") for name in EVALUATORS.names())
