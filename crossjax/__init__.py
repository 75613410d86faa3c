"""crossjax: cross-modal learning in JAX (Flax linen, Optax, Orbax, TFDS, Grain)."""

__version__ = "0.1.0"
