"""python scripts/train.py --config configs/av_mnist.py --workdir runs/av_mnist

Audio-visual digits (`crossjax_av_mnist`): each MNIST digit with a Free Spoken Digit
recording of its label (0.75 s at 8 kHz) and a sentence naming it ("a handwritten seven");
train pairs only from MNIST train and FSDD takes 5-49, test pairs only from MNIST t10k
and takes 0-4. Built once from TFDS's `mnist` and `spoken_digit` (which need
TensorFlow), or from local files, no TensorFlow:

    python scripts/train.py --config configs/av_mnist.py --workdir runs/av_mnist \
        --config.data.pairing_sources.mnist=/data/mnist \
        --config.data.pairing_sources.spoken_digit=/data/fsdd/recordings

A variant joins one model and flags with "_". Models: `fusion` (default: the fusion
classifier on image + audio + text), `av` (image + audio), `image`, `audio`, `text`
(each modality alone, to compare with fusion; the multimodal ones also report robustness
curves, accuracy with a modality missing or noisier, in WORKDIR/images/robustness.png), and the multimodal VAEs `mvae`, `mopoe`, `mmvae` (configs/
digits_mvae.py's recipe on these views), whose audio -> image coherence is judged by
the MNIST CNN run found beside the workdir (runs/av_mvae -> runs/coherence/mnist_cnn;
train it with configs/mnist_cnn.py, scripts/reproduce.py does). Flags: `missing`
(half of the training examples lose one modality), `labels` (only 100 training examples
keep their label, 10 per digit; a quarter of every batch is labelled: the classifiers
train on those alone, the supervised-only baseline; the VAEs add the label as a fourth
modality and classify by inferring it from the others, e.g. `:mopoe_labels`), `weak`
(only 10% of the training pairs stay paired, the rest become single-modality examples),
`align` (MoPoE / MMVAE: configs/digits_mvae.py's contrastive alignment of the unimodal
posteriors, on the examples that have both modalities, at weight ALIGN_WEIGHT; the MVAE
always has it at weight 1; `:mopoe_weak_align` is the weak-pairing method),
`tiny` (a few steps on the pairing of the first 300 digits, judged by
coherence/mnist_cnn_tiny). E.g. `:mopoe_missing`.

Semi-supervised on the same 100 labels (crossjax/losses/consistency.py): `cotrain` (an
image and an audio classifier side by side, crossjax/models/modality_heads.py; each one's
confident prediction labels the other modality's strongly augmented view; reports each
head's accuracy and the averaged prediction's) and the flag `fixmatch` (FixMatch on the
chosen classifier: `:image_fixmatch`, `:audio_fixmatch` are the single-modality
semi-supervised baselines co-training must beat; `:image_labels` the supervised-only one).
"""

import ml_collections

from configs.common import best_checkpoint, is_tiny, run_length, shrink_to_tiny, tiny_catalog
from configs.digits_mvae import ALIGNMENT, BETA, WEIGHTS, multimodal_vae_config
from configs.mnist import catalog_classifier
from configs.mnist_cnn import flax_cnn
from crossjax.errors import ConfigError

DATASET = "crossjax_av_mnist"
MODALITIES = ("image", "audio", "text")
# The text names the digit in every sentence, so text alone is perfect: `av` (image +
# audio) is the fusion whose gain over each modality alone is measured.
CLASSIFIERS = {
    "fusion": MODALITIES, "av": ("image", "audio"),
    "image": ("image",), "audio": ("audio",), "text": ("text",),
}  # fmt: skip
# posterior, loss, loss kwargs, model fields: as configs/digits_{mvae,mopoe,mmvae}.py.
VAES = {
    "mvae": ("poe", "mvae", {"beta": BETA, "warmup_steps": 500, "num_subsets": 1}, {}),
    "mopoe": ("mopoe", "mopoe", {"beta": BETA, "warmup_steps": 500}, {}),
    "mmvae": (
        "moe", "mmvae", {"objective": "dreg", "weights": {m: w / BETA for m, w in WEIGHTS.items()}},
        {"num_samples": 2, "dreg": True},
    ),
}  # fmt: skip
# Steps of each VAE so that one run (training, caching the 54k pairs, two evaluations
# with coherence) stays under 10 minutes on a 2-core CPU (timings and the 2,000-step
# probe: results/config_choices.md).
VAE_STEPS = {"mvae": 1200, "mopoe": 1200, "mmvae": 1200}
FLAGS = ("tiny", "missing", "labels", "weak", "align", "fixmatch")
NUM_LABELS = {False: 100, True: 20}  # `labels`: full / tiny (a few examples per digit)
LABEL_WEIGHT = 50.0  # the label's NLL (~2.3 nats) against the image's hundreds (not tuned)
PAIRED_FRACTION = 0.1  # `weak`
# `align`: the alignment term's weight, chosen on validation audio -> image coherence of
# MoPoE with weak pairing (64 pairs per batch, 1,200 steps): weight 1 0.730, 10 0.768,
# 30 0.833, 100 0.860 (README, "Few labels and unpaired data").
ALIGN_WEIGHT = 100.0
COTRAIN = "cotrain"  # the image and audio classifiers of crossjax.models.modality_heads
# Consistency methods: LABELED labelled rows per batch + the rest unlabelled (FixMatch's
# mu = 3), each seen as a weak and a strong view; steps so that a run stays under 10
# minutes on a 2-core CPU (probe: results/config_choices.md, "av_mnist few labels").
LABELED = 32
CONSISTENCY_STEPS = {"cotrain": 500, "fixmatch": 800}
CONSISTENCY = {"threshold": 0.95, "unlabeled_weight": 1.0}
JUDGE = "coherence/mnist_cnn"  # the MNIST CNN run, beside the VAE's workdir
PAIRS = ("audio_to_image", "text_to_image", "text+audio_to_image")


def split_variant(variant: str | None) -> tuple[str, list[str]]:
    """(model, flags) of a variant such as "mopoe_missing_tiny"; ConfigError otherwise."""
    parts = variant.split("_") if variant else []
    models = [p for p in parts if p in CLASSIFIERS or p in VAES or p == COTRAIN]
    flags = [p for p in parts if p not in models]
    if len(models) > 1 or set(flags) - set(FLAGS) or len(set(flags)) < len(flags):
        raise ConfigError(
            f"unknown config variant {variant!r} of configs/av_mnist.py; valid: one model "
            f"({', '.join([*CLASSIFIERS, *VAES, COTRAIN])}) and/or the flags {', '.join(FLAGS)}, joined by '_'"
        )
    model = models[0] if models else "fusion"
    consistency = model == COTRAIN or "fixmatch" in flags
    if consistency and (
        model in VAES or model == COTRAIN and "fixmatch" in flags or "labels" in flags
    ):
        raise ConfigError(
            f"config variant {variant!r} of configs/av_mnist.py: the flag fixmatch goes with a "
            "classifier model (e.g. image_fixmatch); it and cotrain already train on 100 labels "
            "(without the labels flag)"
        )
    if "align" in flags and model not in VAES:
        raise ConfigError(
            f"config variant {variant!r} of configs/av_mnist.py: the flag align goes with a "
            f"multimodal VAE ({', '.join(VAES)}), e.g. mopoe_weak_align"
        )
    return model, flags


def local_sources(config: ml_collections.ConfigDict) -> None:
    """The local MNIST idx and FSDD recordings folders; "" reads TFDS's mnist and
    spoken_digit (crossjax.data.pairings.local_builder_config)."""
    config.data.pairing_sources = ml_collections.ConfigDict({"mnist": "", "spoken_digit": ""})


def coherence_judge(tiny: bool) -> tuple:
    """The coherence evaluator judged by the MNIST CNN run (its tiny twin for `tiny`)."""
    classifier = {
        "workdir": JUDGE + ("_tiny" if tiny else ""),
        "trained_with": "configs/mnist_cnn.py" + (":tiny" if tiny else ""),
    }
    return ("coherence", {"pairs": PAIRS, "classifiers": {"image": classifier}})


def vae_config(model: str, flags: list[str]) -> ml_collections.ConfigDict:
    posterior, loss, kwargs, fields = VAES[model]
    config = multimodal_vae_config(
        posterior, loss, kwargs, "_".join(flags) or None, dataset=DATASET,
        modalities=MODALITIES, model_fields=fields, extra_flags=("labels", "weak", "align"),
    )  # fmt: skip
    # As configs/digits_mvae.py: the contrastive term aligns the experts (MVAE always;
    # `align` adds it to MoPoE / MMVAE, on the examples that have both modalities of a
    # pair, at ALIGN_WEIGHT).
    if model == "mvae":
        config.losses = (*config.losses, ALIGNMENT)
    elif "align" in flags:
        name, _, kwargs = ALIGNMENT
        config.losses = (*config.losses, (name, ALIGN_WEIGHT, kwargs))
    if "tiny" not in flags:
        config.num_train_steps = VAE_STEPS[model]
    config.evaluators = (*config.evaluators, coherence_judge("tiny" in flags))
    return config


def few_labels(config: ml_collections.ConfigDict, tiny: bool, vae: bool) -> None:
    """`labels`: NUM_LABELS labelled training examples, a quarter of each batch (a
    classifier sees only those: every row of its batch is labelled). A VAE gets the label
    as one more modality, keeps the checkpoint with the best validation accuracy of the
    label inferred from the image alone (the text names the digit, so the joint
    `accuracy` is near 1 and chooses nothing), and reports it per modality alone."""
    config.data.num_labels = NUM_LABELS[tiny]
    quarter = max(1, config.batch_size // 4)
    config.data.labeled_batch_size = quarter if vae else config.batch_size
    if vae:
        if not tiny:
            # A fourth modality doubles the subsets (7 -> 15) and the decoding: 9.6 vs 5.0
            # GFLOP per step (scripts/benchmark.py, MoPoE, batch 128: 289 vs 117 ms on the
            # busy 2-core CPU), so half the steps keep a run under 10 minutes.
            config.num_train_steps = config.num_train_steps // 2
        config.model.modalities = (*config.model.modalities, "label")
        name, weight, kwargs = config.losses[0]
        kwargs = {**kwargs, "weights": {**kwargs["weights"], "label": LABEL_WEIGHT}}
        config.losses = ((name, weight, kwargs), *config.losses[1:])
        config.evaluators = (*config.evaluators, ("label_inference", {}))
        best_checkpoint(config, "label_inference/accuracy_image", "max")


def consistency_training(config: ml_collections.ConfigDict, model: str, tiny: bool) -> None:
    """NUM_LABELS labelled training pairs, LABELED of them in every batch, and the
    semi-supervised objective: co-training for `cotrain`, else FixMatch."""
    config.data.num_labels = NUM_LABELS[tiny]
    config.data.labeled_batch_size = 4 if tiny else LABELED
    if model == COTRAIN:
        config.model.name = "modality_heads_classifier"
        config.losses = (("cotraining", 1.0, {"modalities": CLASSIFIERS["av"], **CONSISTENCY}),)
        config.evaluators = (("head_accuracy", {"modalities": CLASSIFIERS["av"]}),)
    else:
        config.losses = (("fixmatch", 1.0, CONSISTENCY),)
    if not tiny:
        config.num_train_steps = CONSISTENCY_STEPS["cotrain" if model == COTRAIN else "fixmatch"]
        # Two evaluations: the consistency losses run both views there too.
        config.eval_every = config.num_train_steps // 2
        config.checkpoint_every = config.eval_every


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    model, flags = split_variant(variant)
    if model in VAES:
        config = vae_config(model, flags)
    else:
        modalities = CLASSIFIERS["av" if model == COTRAIN else model]
        config = catalog_classifier(DATASET, modalities, None)
        config.data.max_vocab_size = 256
        if "tiny" not in flags:
            # The image tower of the MNIST CNN row (configs/mnist_cnn.py) and its 256
            # features for every variant, so each modality alone has the width it has
            # inside the fused model (why: results/config_choices.md).
            flax_cnn(config)
            config.model.hidden = (128,)
            if "image" not in modalities:
                config.model.encoder_kwargs = {}
        # 2000 steps: each run under 10 minutes on a 2-core CPU (results/reproductions.md).
        run_length(config, steps=2000, batch_size=128, eval_every=1000, checkpoint_every=1000)
        if len(modalities) > 1:  # accuracy with a modality missing or noisier
            config.evaluators = (*config.evaluators, "robustness")
        if "missing" in flags:
            config.data.missing_fraction = 0.5
        if is_tiny("tiny" if "tiny" in flags else None):
            shrink_to_tiny(config)  # -> crossjax_av_mnist/tiny
            tiny_catalog(config, "train", "test")
        if model == COTRAIN or "fixmatch" in flags:
            consistency_training(config, model, "tiny" in flags)
    if "labels" in flags:
        few_labels(config, "tiny" in flags, model in VAES)
    if "weak" in flags:
        config.data.paired_fraction = PAIRED_FRACTION
        # Half of each batch complete: at 0.1, a plain shuffle gives about 5 complete
        # examples in 128, so the experts saw each pair about once (coherence 0.18);
        # chosen on validation coherence: 32 per batch 0.593, 64 0.722, 112 worse (0.685
        # at 3,600 steps against 0.756 for 64).
        config.data.paired_batch_size = config.batch_size // 2
    if "tiny" in flags:
        # A few recordings per digit: a hold-out by recording (the dataset's default) can
        # leave a class out of validation, so tiny runs hold out pairs.
        config.data.validation_group = ""
    local_sources(config)
    return config
