"""Picture evaluators: what a person looks at to judge a generative model."""

from __future__ import annotations

from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.metric_writer import image_grid
from crossjax.requirements import Requires, requires
from crossjax.sharding import to_host


def _reconstruction_requirements(kwargs: dict) -> Requires:
    modality = kwargs.get("modality", "image")
    return Requires(batch=(modality,), outputs=(f"recon/{modality}",))


@EVALUATORS.register("reconstruction_images")
@requires(_reconstruction_requirements)
def reconstruction_images(
    ctx: EvalContext, *, num: int = 16, modality: str = "image"
) -> dict[str, float]:
    """Writes `num` test images above their reconstructions to images/reconstruction_<m>.png.

    Uses `recon_mean/<m>` (the mean of p(x | z)), else `recon/<m>`. Returns no metrics.
    Writes nothing without a writer (e.g. under scripts/evaluate.py).
    """
    if ctx.writer is None:
        return {}
    batch, valid = next(iter(ctx.batches()))
    outputs = ctx.predict(batch)
    recon = outputs.get(f"recon_mean/{modality}", outputs[f"recon/{modality}"])
    originals = to_host(batch[modality])[valid][:num]
    recon = to_host(recon)[valid][:num]
    ctx.writer.write_image(ctx.step, f"reconstruction_{modality}", image_grid([originals, recon]))
    return {}
