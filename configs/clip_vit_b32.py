"""python scripts/train.py --config configs/clip_vit_b32.py --workdir runs/b32 \
    --config.data.source.path=/data/coco/captions.json --config.data.source.images=/data/coco/images \
    --config.model.encoder_kwargs.image.pretrained=/data/ViT-B-32.safetensors \
    --config.model.encoder_kwargs.text.pretrained=/data/ViT-B-32.safetensors \
    --config.data.tokenizer.merges=/data/bpe_simple_vocab_16e6.txt.gz

open_clip's ViT-B-32 (OpenAI's weights: `:quickgelu`) started from a downloaded
checkpoint (.safetensors or .bin) on your own COCO-format images and captions, images
resized to 224x224 and normalised with CLIP's mean and std, captions tokenised by CLIP's
BPE. Evaluated by image<->text retrieval over every caption. Worked example, zero-shot
included: docs/pretrained_clip_example.md.

- (no variant): fine-tunes both towers, learning rates decayed by layer (0.75). Left
  unset, `pretrained` ("") starts a tower from random weights (with a warning).
- `lit`: locked-image tuning: the image tower frozen, the text tower (and temperature) tuned.
- `probe`: a linear probe on the frozen image tower: a labelled image folder
  (`data.source.format=image_folder`), only a linear classifier head trains.
- `zeroshot`: zero-shot classification of a labelled image folder with class names and
  prompt templates from files; evaluation only:
  `python scripts/evaluate.py --config configs/clip_vit_b32.py:zeroshot --nolosses ...`
  with `--config.evaluators` file paths set (see the doc).
- `quickgelu`: OpenAI's original weights (QuickGELU activations).
- `tiny`: the towers of tests/fixtures/pretrained/clip.safetensors (32 px, width 16, two
  blocks, a 64-word vocabulary), a few steps: the stand-in that tests run.
"""

from __future__ import annotations

import math

import ml_collections

from configs import files_clip
from configs.common import run_length
from crossjax.config import base_config, variant_flags
from crossjax.data.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

VIT_B32 = {"patch_size": 32, "width": 768, "layers": 12, "num_heads": 12, "pretrained": ""}
TEXT_B32 = {"context_length": 77, "width": 512, "layers": 12, "num_heads": 8, "pretrained": ""}
TINY_VIT = {"patch_size": 8, "width": 16, "layers": 2, "num_heads": 2, "pretrained": ""}
TINY_TEXT = {"context_length": 12, "width": 16, "layers": 2, "num_heads": 2, "pretrained": ""}
TEMPLATES = ("a photo of a {}.",)


def clip_images(config: ml_collections.ConfigDict, size: int) -> None:
    """Images fitted to size x size RGB (shorter side, bicubic, centre crop) and
    normalised with CLIP's mean and std, as open_clip's preprocessing."""
    config.data.image_size = (size, size)
    config.data.image_mode = "RGB"
    config.data.image_mean = OPENAI_CLIP_MEAN
    config.data.image_std = OPENAI_CLIP_STD


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    flags = variant_flags(variant, ("lit", "probe", "zeroshot", "quickgelu", "tiny"))
    tiny = "tiny" in flags
    config = base_config()
    files_clip.image_text_files(config, "coco")
    config.data.max_text_len = 12 if tiny else 77
    # CLIP's BPE tokenizer; its merges file ships with the open_clip_torch package, found
    # there when data.tokenizer.merges is left unset.
    config.data.tokenizer.kind = "clip_bpe"
    clip_images(config, 32 if tiny else 224)
    image = dict(TINY_VIT if tiny else VIT_B32, quick_gelu="quickgelu" in flags)
    text = dict(TINY_TEXT if tiny else TEXT_B32, quick_gelu="quickgelu" in flags)
    config.model = ml_collections.ConfigDict(
        {
            "name": "two_tower",
            "image_encoder": "open_clip_vit",
            "text_encoder": "open_clip_text",
            "embed_dim": 16 if tiny else 512,
            "init_temperature": math.log(100.0),  # a trained CLIP's scale sits at the cap
            "encoder_kwargs": {"image": image, "text": text},
        }
    )
    config.losses = (("clip", 1.0),)
    config.evaluators = (("retrieval", {"max_examples": 64 if tiny else 1000}),)
    config.optimizer.learning_rate = 1e-5
    config.optimizer.weight_decay = 0.1
    config.optimizer.layer_decay = 0.75
    run_length(config, steps=2000, batch_size=128, eval_every=500, checkpoint_every=500)
    if "lit" in flags:
        config.optimizer.frozen = ("image_encoder",)
        config.optimizer.layer_decay = 1.0
    if "probe" in flags or "zeroshot" in flags:
        config.data.source.format = "image_folder"
        config.data.modalities = ("image",)
        config.data.label_key = "label"
        config.data.all_captions = 0
    if "probe" in flags:
        config.model = ml_collections.ConfigDict(
            {
                "name": "fusion_classifier",
                "modalities": ("image",),
                "image_encoder": "open_clip_vit",
                "features": config.model.embed_dim,
                "hidden": (),  # the linear head on the tower's (frozen) features
                "encoder_kwargs": {"image": image},
            }
        )
        config.losses = (("cross_entropy", 1.0),)
        config.evaluators = ()
        config.optimizer.frozen = ("encoders_image",)
        config.optimizer.layer_decay = 1.0
        config.optimizer.learning_rate = 1e-3
        config.optimizer.weight_decay = 0.0
    if "zeroshot" in flags:
        # Set the two files (one entry per line; names in the label order, i.e. the
        # class folders' sorted names).
        zeroshot = {"class_names_file": "", "templates_file": ""}
        config.evaluators = (("zeroshot", zeroshot),)
    if tiny:
        run_length(config, steps=4, batch_size=8, log_every=2, checkpoint_every=4)
        config.optimizer.warmup_steps = 1
        config.optimizer.learning_rate = 1e-3
        # The fixture's text tower has 64 token ids: a 64-word vocabulary of the captions
        # stands in for CLIP's BPE (49,408 ids).
        config.data.tokenizer.kind = ""
        config.data.vocab_min_count = 1
        config.data.max_vocab_size = 64
    return config
