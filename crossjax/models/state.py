"""Model state: the variable collections a model carries besides `params`.

BatchNorm's running statistics live in the `batch_stats` collection. The trainer keeps
every non-`params` collection of `model.init` in `TrainState.model_state` ({} for
models without one), applies the model with them mutable in training mode (the forward
pass updates them; the optimizer never sees them) and read-only in evaluation, shards
them by the parameters' rules and saves them in the checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def split_variables(variables: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """`model.init`'s variables -> (params, {collection: tree} of the other collections)."""
    params = variables["params"]
    return params, {name: tree for name, tree in variables.items() if name != "params"}
