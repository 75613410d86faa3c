"""A researcher's own loss, prototyped outside the crossjax package.

Any function `(outputs, batch, ctx) -> (scalar, metrics)` on the Python path can be named
in a config as "module.path:function"; the trainer needs no change. See
configs/digits_align.py, which adds this loss to the fused digits classifier.
"""

import jax.numpy as jnp


def embedding_alignment(outputs, batch, ctx, *, pair=("image", "text")):
    """Pulls two modalities' embeddings of the same example together.

    outputs[f"emb/{m}"]: (B, D) each. Returns the batch mean of 1 - cosine similarity.
    """
    a, b = (outputs[f"emb/{m}"] for m in pair)
    a = a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + 1e-6)
    b = b / (jnp.linalg.norm(b, axis=-1, keepdims=True) + 1e-6)
    cosine = jnp.sum(a * b, axis=-1)
    return jnp.mean(1.0 - cosine), {"alignment_cosine": jnp.mean(cosine)}
