"""Forward speed of the converted open_clip ViT-B/32 image tower: crossjax vs PyTorch.

    pip install -e '.[pretrained]'     # torch (CPU), open_clip_torch next to crossjax
    python benchmarks/pretrained_speed.py [--batch 8 32] [--rounds 5] [--compile]

Builds open_clip's `ViT-B-32` with random weights in PyTorch, converts its state dict with
crossjax's converter (`crossjax.models.pretrained`, layout open_clip_visual) into
`open_clip_vit`, checks that both give the same features (max abs difference), then
times the image tower's forward pass in float32 on the same random batch of 224x224
images: crossjax's jitted apply against torch in eval mode under no_grad (and
torch.compile with --compile), alternating the two in each round so that drift in the
machine's load affects both. Prints one JSON object: per batch size the median ms per
forward pass of each and `ratio` = torch ms / crossjax ms (above 1: crossjax is faster).
The image layout (NCHW for torch, NHWC for crossjax) is converted once, outside the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# torchvision's wheel on PyPI is built against CUDA torch; with the CPU build its compiled
# ops do not load and registering their fake kernels fails. open_clip needs no compiled op.
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("meta_stub"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402

from crossjax.benchmark import cpu_info  # noqa: E402
from crossjax.models import pretrained  # noqa: E402
from crossjax.models.clip_towers import CLIPVisionTransformer  # noqa: E402

SIZE = 224


def _timed(fn, iters: int) -> float:
    """Median milliseconds of one call of `fn` over `iters` calls."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=3, help="calls timed per round")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()

    torch.manual_seed(0)
    visual = open_clip.create_model("ViT-B-32", pretrained=None).visual.eval()
    state = {f"visual.{k}": v.detach().numpy() for k, v in visual.state_dict().items()}
    tower = CLIPVisionTransformer(patch_size=32, width=768, layers=12, num_heads=12, features=512)
    template = jax.eval_shape(tower.init, jax.random.key(0), np.zeros((1, SIZE, SIZE, 3)))
    variables = pretrained.convert_state_dict(state, template, "open_clip_visual")
    variables = jax.device_put(variables)
    apply = jax.jit(tower.apply)
    compiled = torch.compile(visual) if args.compile else None

    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
            "jax": jax.__version__,
            "torch": torch.__version__,
            "cpu": cpu_info(),
        }
    }
    for batch in args.batch:
        images = np.random.default_rng(batch).standard_normal((batch, 3, SIZE, SIZE), np.float32)
        nchw = torch.from_numpy(images)
        nhwc = jax.device_put(np.ascontiguousarray(images.transpose(0, 2, 3, 1)))

        def run_jax(nhwc=nhwc):
            return apply(variables, nhwc).block_until_ready()

        def run_torch(model=visual, nchw=nchw):
            with torch.no_grad():
                return model(nchw)

        start = time.perf_counter()
        got = np.asarray(run_jax())
        compile_s = time.perf_counter() - start
        want = run_torch().numpy()
        entry = {
            "max_abs_diff": float(np.max(np.abs(got - want))),
            "output_std": float(np.std(want)),
            "crossjax_compile_s": round(compile_s, 2),
        }
        fns = {"crossjax": run_jax, "torch": run_torch}
        if compiled is not None:
            fns["torch_compile"] = lambda: run_torch(compiled)
            fns["torch_compile"]()  # compiles
        times = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                fn()  # warm (caches, thread pools)
                times[name].append(_timed(fn, args.iters))
        for name, values in times.items():
            entry[f"{name}_ms"] = round(statistics.median(values), 1)
        entry["ratio"] = round(entry["torch_ms"] / entry["crossjax_ms"], 3)
        results[f"batch_{batch}"] = entry
    results["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
