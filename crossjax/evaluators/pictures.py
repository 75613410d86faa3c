"""Picture evaluators: what a person looks at to judge a generative model."""

from __future__ import annotations

from crossjax.evaluators.base import EVALUATORS, EvalContext
from crossjax.metric_writer import image_grid
from crossjax.sharding import to_host


@EVALUATORS.register("reconstruction_images")
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
    recon = outputs.get(f"recon_mean/{modality}", outputs.get(f"recon/{modality}"))
    if recon is None:
        raise KeyError(f"reconstruction_images: the model outputs no recon/{modality}")
    originals = to_host(batch[modality])[valid][:num]
    recon = to_host(recon)[valid][:num]
    ctx.writer.write_image(ctx.step, f"reconstruction_{modality}", image_grid([originals, recon]))
    return {}
