"""Steps/s of crossjax, PyTorch eager and torch.compile on the same models, data, batch
and optimizer.

    pip install -e '.[pretrained]'   # torch 2.13 CPU, open_clip_torch (the two-tower twin)
    python benchmarks/compare_torch.py --json results/torch_compare/run1.json [--rounds 5]

Each model trains on one fixed random batch with Adam (1e-3) on this machine's CPU:
- `vae`: the MLP VAE (784-512-20, Bernoulli), batch 128 of 28x28x1;
- `cnn`: the conv classifier (conv 32, conv 64, Dense 128), batch 128 of 28x28x1;
- `two_tower`: CLIP with ViT and text transformers in open_clip's layout (crossjax's
  `open_clip_vit` / `open_clip_text`; the twin is open_clip's own `CLIP` class with the
  same widths and depths, trained with open_clip's `ClipLoss`), batch 32 of 32x32x3
  images (patch 8) and 16-token captions, width 128, 4 layers per tower;
- `captioner`: configs/shapes_captioner.py's Show, Attend and Tell model (grid CNN,
  attention LSTM with 256 units), batch 64 of 32x32x3 images and 16-token captions
  (the twin in benchmarks/torch_models.py runs `torch.nn.LSTMCell`).

crossjax runs its real jitted train step (crossjax.train.Experiment); PyTorch runs the
twin's loss eagerly and under `torch.compile` (default mode; `--max_autotune` adds
mode="max-autotune"), backward and `torch.optim.Adam` (foreach). The runners are timed
in alternating rounds and the medians compared, so drift in the machine's load affects
all of them. Per model: `crossjax_steps_per_s`, `torch_eager_steps_per_s`,
`torch_compile_steps_per_s`, `ratio_vs_eager`, `ratio_vs_compile` (crossjax / torch)
and each runner's `*_warmup_s` (its first two steps: tracing and compilation).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import write_json  # noqa: E402
from crossjax import sharding  # noqa: E402
from crossjax.benchmark import cpu_info  # noqa: E402
from crossjax.config import base_config  # noqa: E402
from crossjax.data.spec import DataSpec  # noqa: E402
from crossjax.train import Experiment  # noqa: E402

MNIST = DataSpec(modalities=("image",), num_classes=10, image_shape=(28, 28, 1))
# The two-tower and captioner benchmarks: 32x32x3 images, 16-token captions.
VOCAB, TEXT_LEN, IMAGE = 64, 16, (32, 32, 3)
PAIRS = DataSpec(
    modalities=("image", "text"), vocab_size=VOCAB, max_text_len=TEXT_LEN, image_shape=IMAGE
)
# The two tower (open_clip's layout at CPU size).
TOWER = {"width": 128, "layers": 4, "heads": 2, "patch": 8, "embed": 128}


@dataclasses.dataclass(frozen=True)
class Bench:
    """One model: its crossjax config, DataSpec and batch size, and its PyTorch twin
    `torch_model(batch) -> (module, loss_fn(*inputs), inputs)`."""

    model: Callable[[dict], ml_collections.ConfigDict]
    spec: DataSpec
    batch_size: int
    torch_model: Callable[[dict], tuple]


def _vae_model(kwargs: dict) -> ml_collections.ConfigDict:
    del kwargs
    return ml_collections.ConfigDict(
        {
            "name": "vae",
            "modality": "image",
            "hidden": (512,),
            "latent_dim": 20,
            "likelihood": "bernoulli",
        }
    )


def _cnn_model(kwargs: dict) -> ml_collections.ConfigDict:
    """`kwargs` override fields of the CNN encoder (e.g. conv_impl, batch_blocks)."""
    return ml_collections.ConfigDict(
        {
            "name": "fusion_classifier",
            "modalities": ("image",),
            "image_encoder": "cnn",
            "encoder_kwargs": {"image": {"channels": (32, 64), **kwargs}},
            "features": 128,
            "hidden": (),
        }
    )


def _two_tower_model(kwargs: dict) -> ml_collections.ConfigDict:
    del kwargs
    w, n, h = TOWER["width"], TOWER["layers"], TOWER["heads"]
    return ml_collections.ConfigDict(
        {
            "name": "two_tower",
            "image_encoder": "open_clip_vit",
            "text_encoder": "open_clip_text",
            "embed_dim": TOWER["embed"],
            "encoder_kwargs": {
                "image": {"patch_size": TOWER["patch"], "width": w, "layers": n, "num_heads": h},
                "text": {"context_length": TEXT_LEN, "width": w, "layers": n, "num_heads": h},
            },
        }
    )


def _captioner_model(kwargs: dict) -> ml_collections.ConfigDict:
    del kwargs
    from configs.shapes_captioner import get_config

    return get_config().model


def _torch_vae(batch: dict) -> tuple:
    import torch

    from benchmarks.torch_models import TorchVAE

    net = TorchVAE()
    return net, net.loss, (torch.from_numpy(batch["image"].reshape(len(batch["image"]), -1)),)


def _nchw(images: np.ndarray):
    import torch

    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def _torch_cnn(batch: dict) -> tuple:
    import torch

    from benchmarks.torch_models import TorchCNN

    net = TorchCNN()
    return net, net.loss, (_nchw(batch["image"]), torch.from_numpy(batch["label"].astype(np.int64)))


def _torch_two_tower(batch: dict) -> tuple:
    import torch

    from benchmarks.torch_models import import_open_clip

    import_open_clip()
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    w, n = TOWER["width"], TOWER["layers"]
    net = CLIP(
        embed_dim=TOWER["embed"],
        vision_cfg=CLIPVisionCfg(
            layers=n,
            width=w,
            head_width=w // TOWER["heads"],
            patch_size=TOWER["patch"],
            image_size=IMAGE[0],
        ),
        text_cfg=CLIPTextCfg(
            context_length=TEXT_LEN, vocab_size=VOCAB, width=w, heads=TOWER["heads"], layers=n
        ),
    )
    clip_loss = ClipLoss()

    def loss(image, text):
        image_features, text_features, logit_scale = net(image, text)[:3]
        return clip_loss(image_features, text_features, logit_scale)

    return net, loss, (_nchw(batch["image"]), torch.from_numpy(batch["text"].astype(np.int64)))


def _torch_captioner(batch: dict) -> tuple:
    import torch

    from benchmarks.torch_models import TorchCaptioner

    m = _captioner_model({})
    net = TorchCaptioner(
        VOCAB,
        tuple(m.encoder_kwargs.channels),
        m.features,
        m.embed_dim,
        m.hidden,
        m.attention_dim,
    )
    text = torch.from_numpy(batch["text"].astype(np.int64))
    return net, net.loss, (_nchw(batch["image"]), text, torch.from_numpy(batch["text_mask"]))


BENCHES = {
    "vae": Bench(_vae_model, MNIST, 128, _torch_vae),
    "cnn": Bench(_cnn_model, MNIST, 128, _torch_cnn),
    "two_tower": Bench(_two_tower_model, PAIRS, 32, _torch_two_tower),
    "captioner": Bench(_captioner_model, PAIRS, 64, _torch_captioner),
}
LOSSES = {
    "vae": (("neg_elbo", 1.0, {"modality": "image", "likelihood": "bernoulli"}),),
    "cnn": (("cross_entropy", 1.0),),
    "two_tower": (("clip", 1.0),),
    "captioner": (("token_cross_entropy", 1.0),),
}


def make_batch(name: str, seed: int = 0) -> dict:
    """One random batch for `name`: images in [0, 1]; captions of 4..L-1 random words
    (ids 1..V-2) ending in V-1 (the two tower's end-of-text: its pooled, highest id)."""
    bench = BENCHES[name]
    rng = np.random.default_rng(seed)
    b = bench.batch_size
    batch = {"image": rng.random((b, *bench.spec.image_shape), np.float32)}
    if bench.spec.num_classes:
        batch["label"] = rng.integers(0, bench.spec.num_classes, b).astype(np.int32)
    if "text" in bench.spec.modalities:
        lengths = rng.integers(4, TEXT_LEN, b)
        text = rng.integers(1, VOCAB - 1, (b, TEXT_LEN)).astype(np.int32)
        mask = np.arange(TEXT_LEN)[None] < lengths[:, None]
        text[np.arange(b), lengths - 1] = VOCAB - 1
        batch["text"], batch["text_mask"] = np.where(mask, text, 0), mask
    return batch


def crossjax_config(name: str, model_kwargs: dict | None = None) -> ml_collections.ConfigDict:
    """The crossjax side: the model, its loss, Adam at 1e-3, no schedule, one device."""
    bench = BENCHES[name]
    config = base_config()
    config.batch_size = bench.batch_size
    config.num_devices = 1
    config.optimizer.name = "adam"
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.grad_clip_norm = 0.0
    config.model = bench.model(model_kwargs or {})
    config.losses = LOSSES[name]
    return config


def crossjax_runner(name: str, batch: dict, model_kwargs: dict | None = None):
    config = crossjax_config(name, model_kwargs)
    spec = BENCHES[name].spec
    exp = Experiment(config, types.SimpleNamespace(spec=spec, vocab=None), sharding.make_mesh(1))
    batch = sharding.to_global(batch, exp.mesh)
    state = {"state": exp.init(), "acc": exp.empty_train_metrics()}

    def run(steps: int) -> None:
        s, a = state["state"], state["acc"]
        for _ in range(steps):
            s, a = exp.train_step(s, batch, a)
        jax.block_until_ready(a)
        state["state"], state["acc"] = s, a

    def compiled_text() -> str:
        """The compiled train step's HLO (benchmarks/profile_step.py names ops from it)."""
        return exp.train_step.lower(state["state"], batch, state["acc"]).compile().as_text()

    run.compiled_text = compiled_text
    return run


def torch_runner(name: str, batch: dict, compile_mode: str | None = None):
    """Eager (compile_mode None) or `torch.compile(loss, mode=compile_mode)`."""
    import torch

    torch.manual_seed(0)
    net, loss_fn, inputs = BENCHES[name].torch_model(batch)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    if compile_mode is not None:
        loss_fn = torch.compile(loss_fn, mode=compile_mode)

    def run(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(*inputs).backward()
            opt.step()

    return run


def timed(run, steps: int) -> float:
    """Seconds for `steps` steps."""
    start = time.perf_counter()
    run(steps)
    return time.perf_counter() - start


def compare(
    models=("vae", "cnn"),
    rounds: int = 5,
    seconds: float = 2.0,
    model_kwargs: dict | None = None,
    compile_modes: tuple[str, ...] = ("default",),
) -> dict:
    """Per model: each runner's median steps/s over `rounds` alternating rounds of about
    `seconds` each, the ratios and the warm-up seconds. `model_kwargs` go to the CNN."""
    results = {}
    for name in models:
        batch = make_batch(name)
        runners = {"crossjax": crossjax_runner(name, batch, model_kwargs if name == "cnn" else {})}
        runners["torch_eager"] = torch_runner(name, batch)
        for mode in compile_modes:
            key = (
                "torch_compile" if mode == "default" else f"torch_compile_{mode.replace('-', '_')}"
            )
            runners[key] = torch_runner(name, batch, mode)
        row, steps = {}, {}
        for key, run in runners.items():  # warm up (compile), then size each round
            row[f"{key}_warmup_s"] = timed(run, 2)
            steps[key] = max(3, int(seconds * 3 / timed(run, 3)))
        rates = {key: [] for key in runners}
        for _ in range(rounds):
            for key, run in runners.items():
                rates[key].append(steps[key] / timed(run, steps[key]))
        for key in runners:
            row[f"{key}_steps_per_s"] = statistics.median(rates[key])
            row[f"{key}_all"] = rates[key]
        cj = row["crossjax_steps_per_s"]
        for key in runners:
            if key != "crossjax":
                row[f"ratio_vs_{key.removeprefix('torch_')}"] = cj / row[f"{key}_steps_per_s"]
        row["rounds"] = rounds
        row["batch_size"] = BENCHES[name].batch_size
        results[name] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each round")
    parser.add_argument("--models", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument(
        "--max_autotune", action="store_true", help="also torch.compile(mode='max-autotune')"
    )
    parser.add_argument(
        "--conv_impl", default="xla", choices=["xla", "patches"], help="crossjax's CNN convolutions"
    )
    parser.add_argument(
        "--batch_blocks",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="crossjax's CNN batch blocking: 'auto' (the default) or a block count (1 = off)",
    )
    args = parser.parse_args()
    import torch

    cnn_kwargs = {"conv_impl": args.conv_impl, "batch_blocks": args.batch_blocks}
    modes = ("default", "max-autotune") if args.max_autotune else ("default",)
    results = {
        "torch_version": torch.__version__,
        "jax_version": jax.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_info(),
        "cnn_kwargs": cnn_kwargs,
    }
    results.update(compare(tuple(args.models), args.rounds, args.seconds, cnn_kwargs, modes))
    for name in args.models:
        r = results[name]
        print(
            f"{name}: crossjax {r['crossjax_steps_per_s']:.1f} steps/s, torch eager "
            f"{r['torch_eager_steps_per_s']:.1f}, torch.compile {r['torch_compile_steps_per_s']:.1f}"
            f" -> {r['ratio_vs_eager']:.2f}x eager, {r['ratio_vs_compile']:.2f}x compiled "
            f"(warm-up s: crossjax {r['crossjax_warmup_s']:.1f}, compile "
            f"{r['torch_compile_warmup_s']:.1f})",
            flush=True,
        )
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
