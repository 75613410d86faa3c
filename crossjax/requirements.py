"""What a loss or an evaluator reads, declared next to it, checked before the first step.

`@requires(Requires(batch=..., outputs=...))` on a loss or evaluator (or a callable of its
config kwargs returning Requires); `check_requirements` compares every declaration with the
batch keys of the data and the output keys of the model and names every mismatch in one line.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from crossjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Requires:
    batch: tuple[str, ...] = ()  # batch keys read: "label", "text", "present/audio", "attr/color"
    outputs: tuple[str, ...] = ()  # model output keys read: "logits", "emb/image", "recon/image"


def requires(spec: Requires | Callable[[dict], Requires]):
    """Decorator: sets fn.requires. A callable receives the entry's kwargs (e.g. modality=)."""

    def mark(fn):
        fn.requires = spec
        return fn

    return mark


def requirements_of(fn: Callable, kwargs: Mapping[str, Any] | None = None) -> Requires:
    """fn's declared needs (seeing through functools.partial); Requires() if none."""
    bound: dict[str, Any] = {}
    while isinstance(fn, functools.partial):
        bound = {**fn.keywords, **bound}
        fn = fn.func
    spec = getattr(fn, "requires", None)
    if spec is None:
        return Requires()
    if callable(spec) and not isinstance(spec, Requires):
        return spec({**bound, **dict(kwargs or {})})
    return spec


def check_requirements(
    owners: Sequence[tuple[str, Requires]],
    batch_keys: Collection[str],
    output_keys: Collection[str],
) -> None:
    """ConfigError in ONE line naming every missing key and who needs it, and what the data /
    model provide."""
    problems = []
    for owner, need in owners:
        for key in need.batch:
            if key not in batch_keys:
                problems.append(
                    f"{owner} needs batch key {key!r} (the data gives: "
                    f"{', '.join(sorted(batch_keys)) or 'nothing'})"
                )
        for key in need.outputs:
            if key not in output_keys:
                problems.append(
                    f"{owner} needs model output {key!r} (the model gives: "
                    f"{', '.join(sorted(output_keys)) or 'nothing'})"
                )
    if problems:
        raise ConfigError("; ".join(problems))
