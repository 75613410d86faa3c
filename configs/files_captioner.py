"""python scripts/train.py --config configs/files_captioner.py --workdir runs/my_captioner \
    --config.data.source.path=/path/to/captions.json --config.data.source.images=/path/to/images

Captioning your own images: COCO-format caption annotations and their image folder
(test: a seeded 10% of the images, or `--config.data.source.test_path=...`), converted
once into the data_dir with images fitted to 64x64 RGB. The Show, Attend and Tell model
of configs/shapes_captioner.py (a CNN grid, an LSTM attending over its cells), trained
with teacher forcing on a random caption per image and epoch; the "captioning"
evaluator decodes 500 test images greedily and with beam search (4 beams) and scores
them against all their captions (BLEU-4, CIDEr-D). A JSONL/CSV manifest with `image`
and `text` columns instead: `--config.data.source.format=manifest`.
Tiny (8 steps): `--config configs/files_captioner.py:tiny`.
"""

import ml_collections

from configs import shapes_captioner
from configs.common import is_tiny, run_length
from configs.files_clip import image_text_files


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = shapes_captioner.get_config(variant)
    image_text_files(config, "coco")
    config.data.max_text_len = 20
    config.data.vocab_min_count = 5  # COCO-sized vocabularies: rare words -> <unk>
    config.evaluators = (("captioning", {"beam_size": 4, "max_examples": 500}),)
    if is_tiny(variant):
        config.data.image_size = (16, 16)
        config.data.vocab_min_count = 1
        config.evaluators = (("captioning", {"beam_size": 2, "num_pictures": 4}),)
    else:
        run_length(config, steps=6000, batch_size=64, checkpoint_every=1500, eval_every=3000)
    return config
