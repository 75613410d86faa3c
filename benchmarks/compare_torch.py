"""Steps/s of crossjax and PyTorch on the same models, data, batch and optimizer.

    pip install torch==2.13.0    # the CPU build; an optional dev dependency
    python benchmarks/compare_torch.py --json results/torch_compare.json [--rounds 5]

Both frameworks train the same model (see benchmarks/torch_models.py) on the same
random batch (128 examples of 28x28x1, Adam at 1e-3) on this machine's CPU. crossjax
runs its real jitted train step (crossjax.train.Experiment); PyTorch runs eagerly.
The two are timed alternately for several rounds and the medians compared, so drift
in the machine's load affects both. Writes per-model `crossjax_steps_per_s`,
`torch_steps_per_s` and `ratio` (crossjax / torch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from crossjax import sharding  # noqa: E402
from crossjax.config import base_config  # noqa: E402
from crossjax.data.spec import DataSpec  # noqa: E402
from crossjax.train import Experiment  # noqa: E402

BATCH = 128
SPEC = DataSpec(modalities=("image",), num_classes=10, image_shape=(28, 28, 1))


def crossjax_config(model: str, cnn_kwargs: dict | None = None) -> ml_collections.ConfigDict:
    """`cnn_kwargs` override fields of the CNN encoder (e.g. conv_impl, batch_blocks)."""
    config = base_config()
    config.batch_size = BATCH
    config.num_devices = 1
    config.optimizer.name = "adam"
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.grad_clip_norm = 0.0
    if model == "vae":
        config.model = ml_collections.ConfigDict(
            {
                "name": "vae",
                "modality": "image",
                "hidden": (512,),
                "latent_dim": 20,
                "likelihood": "bernoulli",
            }
        )
        config.losses = (("neg_elbo", 1.0, {"modality": "image", "likelihood": "bernoulli"}),)
    else:
        config.model = ml_collections.ConfigDict(
            {
                "name": "fusion_classifier",
                "modalities": ("image",),
                "image_encoder": "cnn",
                "encoder_kwargs": {"image": {"channels": (32, 64), **(cnn_kwargs or {})}},
                "features": 128,
                "hidden": (),
            }
        )
    return config


def crossjax_runner(
    model: str, images: np.ndarray, labels: np.ndarray, cnn_kwargs: dict | None = None
):
    config = crossjax_config(model, cnn_kwargs)
    exp = Experiment(config, types.SimpleNamespace(spec=SPEC, vocab=None), sharding.make_mesh(1))
    batch = sharding.to_global({"image": images, "label": labels}, exp.mesh)
    state = {"state": exp.init(), "acc": exp.empty_train_metrics()}

    def run(steps: int) -> None:
        s, a = state["state"], state["acc"]
        for _ in range(steps):
            s, a = exp.train_step(s, batch, a)
        jax.block_until_ready(a)
        state["state"], state["acc"] = s, a

    return run


def torch_runner(model: str, images: np.ndarray, labels: np.ndarray):
    import torch

    from benchmarks.torch_models import TorchCNN, TorchVAE

    torch.manual_seed(0)
    net = TorchVAE() if model == "vae" else TorchCNN()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    x_flat = x.reshape(BATCH, -1)
    y = torch.from_numpy(labels.astype(np.int64))

    def run(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = net.loss(x_flat) if model == "vae" else net.loss(x, y)
            loss.backward()
            opt.step()

    return run


def steps_per_s(run, steps: int) -> float:
    start = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - start)


def compare(
    models=("vae", "cnn"), rounds: int = 5, seconds: float = 2.0, cnn_kwargs: dict | None = None
) -> dict:
    rng = np.random.default_rng(0)
    images = rng.random((BATCH, 28, 28, 1), np.float32)
    labels = rng.integers(0, 10, BATCH).astype(np.int32)
    results = {}
    for model in models:
        runners = {
            "crossjax": crossjax_runner(model, images, labels, cnn_kwargs),
            "torch": torch_runner(model, images, labels),
        }
        steps = {}
        for name, run in runners.items():  # warm up (compile) and size each round to ~`seconds`
            run(2)
            steps[name] = max(3, int(seconds * steps_per_s(run, 3)))
        rates = {name: [] for name in runners}
        for _ in range(rounds):
            for name, run in runners.items():
                rates[name].append(steps_per_s(run, steps[name]))
        cj, th = statistics.median(rates["crossjax"]), statistics.median(rates["torch"])
        results[model] = {
            "crossjax_steps_per_s": cj,
            "torch_steps_per_s": th,
            "ratio": cj / th,
            "rounds": rounds,
            "crossjax_all": rates["crossjax"],
            "torch_all": rates["torch"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["vae", "cnn"], choices=["vae", "cnn"])
    parser.add_argument(
        "--conv_impl",
        default="xla",
        choices=["xla", "patches"],
        help="crossjax's CNN convolutions",
    )
    parser.add_argument(
        "--batch_blocks",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="crossjax's CNN batch blocking: 'auto' (the default) or a block count (1 = off)",
    )
    args = parser.parse_args()
    import torch

    results = {
        "torch_version": torch.__version__,
        "jax_version": jax.__version__,
        "torch_threads": torch.get_num_threads(),
        "batch_size": BATCH,
    }
    cnn_kwargs = {"conv_impl": args.conv_impl, "batch_blocks": args.batch_blocks}
    results["cnn_kwargs"] = cnn_kwargs
    results.update(compare(tuple(args.models), args.rounds, cnn_kwargs=cnn_kwargs))
    for model in args.models:
        r = results[model]
        print(
            f"{model}: crossjax {r['crossjax_steps_per_s']:.1f} steps/s, "
            f"torch {r['torch_steps_per_s']:.1f} steps/s, ratio {r['ratio']:.2f}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps({m: results[m]["ratio"] for m in args.models}))


if __name__ == "__main__":
    main()
