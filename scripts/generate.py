"""Cross-modal generation with a trained multimodal VAE run.

    python scripts/generate.py --workdir runs/digits_mvae --sources text --targets image \
        --text "a handwritten seven" --text "the digit 3"
    python scripts/generate.py --workdir runs/digits_mvae --sources audio --targets image,text \
        --num 10

Inputs are the --text prompts, or else the first --num examples of the run's test split.
Each image target is saved as a grid (one row per input; an image source is shown
first) in --out (default WORKDIR/generated/<sources>_to_<target>.png); text targets and
text sources are printed, one line per input.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from crossjax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a multimodal VAE run.")
_SOURCES = flags.DEFINE_list("sources", None, "Modalities to encode, e.g. text or text,audio.")
_TARGETS = flags.DEFINE_list("targets", None, "Modalities to generate, e.g. image or image,text.")
_TEXT = flags.DEFINE_multi_string("text", [], "A text prompt (repeatable); needs --sources text.")
_NUM = flags.DEFINE_integer("num", 8, "Test examples to generate from when no --text is given.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best, or a step number.")
_SAMPLE = flags.DEFINE_bool("sample", False, "Decode a posterior sample instead of the mean.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of --sample.")
_OUT = flags.DEFINE_string("out", None, "Folder for the image grids (default WORKDIR/generated).")
_TRUST = flags.DEFINE_bool(
    "trust_run_code",
    False,
    "Let the run's saved config import 'module:attr' names (code outside crossjax); only "
    "for runs you trust.",
)
flags.mark_flags_as_required(["workdir", "sources", "targets"])


def main(argv: list[str]) -> None:
    del argv
    from crossjax.registry import set_trust_run_code

    set_trust_run_code(_TRUST.value)
    import numpy as np

    from crossjax.errors import ConfigError
    from crossjax.metric_writer import image_grid, save_png
    from crossjax.runs import load_generator

    which = _CHECKPOINT.value
    checkpoint = int(which) if which.isdigit() else which
    sources, targets = tuple(_SOURCES.value), tuple(_TARGETS.value)
    if _TEXT.value and sources != ("text",):
        raise ConfigError("--text prompts need --sources text")
    if _NUM.value < 1:
        raise ConfigError(f"--num={_NUM.value}; valid: >= 1")
    gen = load_generator(_WORKDIR.value, checkpoint)
    batch = gen.text_batch(_TEXT.value) if _TEXT.value else gen.eval_examples(_NUM.value)
    out = gen(batch, sources=sources, targets=targets, sample=_SAMPLE.value, seed=_SEED.value)
    name = "+".join(sources)
    if "text" in sources:
        for i, text in enumerate(gen.decode_text(batch["text"])):
            print(f"input {i} text: {text}")
    out_dir = Path(_OUT.value or Path(_WORKDIR.value) / "generated")
    for target, values in out.items():
        if target == "text":
            for i, text in enumerate(gen.decode_text(values)):
                print(f"input {i} -> text: {text}")
            continue
        path = out_dir / f"{name}_to_{target}"
        if target.startswith("image"):
            # One row per input: the source image (when encoded) next to the generated one.
            shown = [batch["image"], values] if "image" in sources else [values]
            path = save_png(path.with_suffix(".png"), image_grid(list(np.stack(shown, 1))))
        else:
            path = path.with_suffix(".npy")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, values)
        print(f"{target}: {path} (array {values.shape})")


if __name__ == "__main__":
    cli.run(main)
