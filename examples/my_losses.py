"""A researcher's own loss, prototyped outside the crossjax package.

Any function `(outputs, batch, ctx) -> (per-example values (B,), metrics)` on the Python
path can be named in a config as "module.path:function"; the trainer needs no change and
takes the masked mean over the batch itself. See configs/digits_align.py, which adds this
loss to the fused digits classifier.
"""

import jax.numpy as jnp

from crossjax.requirements import Requires, requires


@requires(lambda kw: Requires(outputs=tuple(f"emb/{m}" for m in kw.get("pair", ("image", "text")))))
def embedding_alignment(outputs, batch, ctx, *, pair=("image", "text")):
    """Pulls two modalities' embeddings of the same example together.

    outputs[f"emb/{m}"]: (B, D) each. Returns 1 - cosine similarity per example, (B,).
    The declaration above lets the trainer name a missing embedding before step 1.
    """
    a, b = (outputs[f"emb/{m}"] for m in pair)
    a = a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + 1e-6)
    b = b / (jnp.linalg.norm(b, axis=-1, keepdims=True) + 1e-6)
    cosine = jnp.sum(a * b, axis=-1)
    return 1.0 - cosine, {"alignment_cosine": cosine}
