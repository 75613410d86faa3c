"""Which parameters train, and how fast: frozen towers and layer-wise learning-rate decay.

Both read a parameter's place from its path in the params tree, joined with "/"
(`image_encoder/transformer/resblocks_3/attn/in_proj/kernel`), so they need no help
from the model.

- `optimizer.frozen`: path prefixes (or tower names such as "image_encoder") whose
  parameters never change: the optimizer gives them no update (no weight decay, no
  momentum, no optimizer state), the trainer stops their gradients (the frozen tower's
  backward pass is not computed) and keeps their values bit for bit. Locked-image tuning
  (LiT) is `frozen=("image_encoder",)`; a linear probe freezes the encoder of a
  classifier so that only its head trains.
- `optimizer.layer_decay` d < 1: in a transformer tower of L blocks, block k (0-based)
  trains at learning rate lr * d**(L - k), the embeddings (patch/token/position
  embeddings, class token, pre-LayerNorm) at lr * d**(L + 1), and what follows the
  blocks (final LayerNorm, pooler, projection) at lr: BEiT/MAE's convention. Parameters
  outside a transformer tower (the logit scale, a classifier head, a CNN) keep lr.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import optax

from crossjax.errors import ConfigError

# A block of a transformer: open_clip `resblocks_<k>`, BERT `layer_<k>`, SigLIP
# `layers_<k>`, GPT-2 `h_<k>`, crossjax's own `block_<k>`.
LAYER_NAME = re.compile(r"^(resblocks|layer|layers|h|block)_(\d+)$")
# The module holding the blocks, when the blocks are not the tower's own children.
_CONTAINERS = ("transformer", "encoder")
EMBEDDING_NAMES = frozenset(
    {
        "conv1", "class_embedding", "positional_embedding", "ln_pre", "token_embedding",
        "embeddings", "wte", "wpe", "embed", "patch_embed", "pos_embedding", "cls_token",
    }
)  # fmt: skip
HEAD_NAMES = frozenset(
    {
        "ln_post", "proj", "ln_final", "text_projection", "pooler", "projection", "head",
        "ln_f", "final_layer_norm", "post_layernorm",
    }
)  # fmt: skip


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
    """A `jax.tree_util` key path as plain names: ("image_encoder", "conv1", "kernel")."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _paths(params: Any) -> list[tuple[str, ...]]:
    return [path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _map_paths(fn, params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda p, _: fn(path_names(p)), params)


def parse_frozen(value: Any) -> tuple[str, ...]:
    """`optimizer.frozen` as a tuple of "/"-joined path prefixes (ConfigError otherwise)."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"optimizer.frozen={value!r}; valid: a list of parameter path prefixes or tower "
            "names, e.g. ('image_encoder',)"
        )
    return tuple(v.strip("/") for v in value)


def frozen_mask(params: Any, frozen: Sequence[str]) -> Any:
    """A tree like `params` of bools: True where the path starts with a `frozen` prefix
    (whole names: "image_encoder" matches image_encoder/..., not image_encoder2/...).
    ConfigError for a prefix that matches no parameter, listing the top-level names."""
    prefixes = [tuple(p.split("/")) for p in frozen]
    paths = _paths(params)
    for prefix in prefixes:
        if not any(path[: len(prefix)] == prefix for path in paths):
            top = sorted({path[0] for path in paths})
            raise ConfigError(
                f"optimizer.frozen names {'/'.join(prefix)!r}, which matches no parameter; "
                f"the model's top-level names are: {', '.join(top)}"
            )
    return _map_paths(lambda path: any(path[: len(p)] == p for p in prefixes), params)


def _tower_root(path: tuple[str, ...], block: int) -> tuple[str, ...]:
    """The tower of a block at path[block]: its container's parent when the blocks sit in
    a `transformer`/`encoder` module, else the blocks' parent."""
    container = path[:block]
    return container[:-1] if container and container[-1] in _CONTAINERS else container


def layer_decay_factors(params: Any, decay: float) -> Any:
    """A tree like `params` of learning-rate factors (floats): see the module doc.

    ConfigError when no transformer block is found, or when a parameter of a transformer
    tower is neither in a block nor a known embedding or head name (an unknown layout).
    """
    paths = _paths(params)
    depth: dict[tuple[str, ...], int] = {}  # tower root -> number of blocks
    for path in paths:
        for i, name in enumerate(path):
            match = LAYER_NAME.match(name)
            if match:
                root = _tower_root(path, i)
                depth[root] = max(depth.get(root, 0), int(match.group(2)) + 1)
                break
    if not depth:
        raise ConfigError(
            f"optimizer.layer_decay={decay} needs a trainable transformer tower (blocks "
            "named resblocks_<k>, layer_<k>, layers_<k>, h_<k> or block_<k>, not frozen); "
            "this model has none; set layer_decay=1.0"
        )

    def factor(path: tuple[str, ...]) -> float:
        roots = [r for r in depth if path[: len(r)] == r]
        if not roots:
            return 1.0  # outside every transformer tower
        root = max(roots, key=len)
        blocks = depth[root]
        rest = path[len(root) :]
        for name in rest:
            match = LAYER_NAME.match(name)
            if match:
                return decay ** (blocks - int(match.group(2)))
        if len(rest) > 1 and rest[0] in _CONTAINERS:
            rest = rest[1:]  # e.g. crossjax's encoder/pos_embedding, encoder/ln_final
        if rest[0] in EMBEDDING_NAMES:
            return decay ** (blocks + 1)
        if rest[0] in HEAD_NAMES:
            return 1.0
        raise ConfigError(
            f"optimizer.layer_decay cannot place parameter {'/'.join(path)} (not in a block, "
            f"not a known embedding or head name): an unknown tower layout; set layer_decay=1.0"
        )

    return _map_paths(factor, params)


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Multiplies each update by its `layer_decay_factors` factor (the same as scaling
    that parameter's learning rate, weight decay included, for adam(w) and sgd)."""

    def scale(updates, params=None):
        del params
        factors = layer_decay_factors(updates, decay)
        return jax.tree.map(lambda u, f: u if f == 1.0 else u * f, updates, factors)

    return optax.stateless(scale)


def freeze(tx: optax.GradientTransformation, frozen: Sequence[str]) -> optax.GradientTransformation:
    """`tx` for the trainable parameters; zero updates (and no state) for the `frozen`."""
    if not frozen:
        return tx

    def labels(params):
        mask = frozen_mask(params, frozen)
        return jax.tree.map(lambda f: "frozen" if f else "train", mask)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def stop_frozen_gradients(params: Any, frozen: Sequence[str]) -> Any:
    """`params` with `jax.lax.stop_gradient` on the frozen ones: their gradients are zero
    and the backward pass through a frozen input tower is not computed."""
    if not frozen:
        return params
    mask = frozen_mask(params, frozen)
    return jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, mask)


def apply_updates(params: Any, updates: Any, frozen: Sequence[str]) -> Any:
    """`optax.apply_updates`, except that frozen parameters are returned as they are
    (bit for bit: p + 0 would turn -0.0 into 0.0)."""
    new = optax.apply_updates(params, updates)
    if not frozen:
        return new
    mask = frozen_mask(params, frozen)
    return jax.tree.map(lambda p, n, f: p if f else n, params, new, mask)


def keep_frozen_state(old: Any, new: Any, frozen: Sequence[str]) -> Any:
    """The updated model state `new` ({collection: tree}, e.g. BatchNorm's `batch_stats`)
    with the leaves under a `frozen` prefix taken from `old`: a locked tower's statistics
    stay bit-identical too. A frozen tower without state is no error (it has parameters)."""
    if not frozen or not new:
        return new
    prefixes = [tuple(p.split("/")) for p in frozen]

    def pick(path, o, n):
        path = path_names(path)[1:]  # below the collection name
        return o if any(path[: len(p)] == p for p in prefixes) else n

    return jax.tree_util.tree_map_with_path(pick, old, new)
