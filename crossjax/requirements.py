"""What losses and evaluators read, declared next to them, so that a mismatch with the data
or the model is found before the first training step instead of after the whole run.

    @requires(Requires(batch=("label",), outputs=("logits",)))
    def cross_entropy(outputs, batch, ctx): ...

    @requires(lambda kw: Requires(batch=(kw.get("modality", "image"),)))
    def reconstruction_images(ctx, *, modality="image"): ...

The trainer collects `(owner, Requires)` pairs (e.g. `evaluator_requirements`) and calls
`check_requirements` with the batch keys of the data spec and the output keys of one
abstract trace of the model.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from crossjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Requires:
    """Keys a loss or evaluator reads."""

    batch: tuple[str, ...] = ()  # batch keys read: "label", "text", "present/audio", "attr/color"
    outputs: tuple[str, ...] = ()  # model output keys read: "logits", "emb/image", "recon/image"

    def __post_init__(self) -> None:
        for field in ("batch", "outputs"):
            value = getattr(self, field)
            if isinstance(value, str):
                raise TypeError(
                    f"Requires.{field} must be a tuple of keys, got the string {value!r}"
                )
            object.__setattr__(self, field, tuple(value))

    def __add__(self, other: Requires) -> Requires:
        """Both needs, each key once, in order of first mention."""
        return Requires(
            tuple(dict.fromkeys(self.batch + other.batch)),
            tuple(dict.fromkeys(self.outputs + other.outputs)),
        )


Spec = Requires | Callable[[dict], Requires]


def requires(spec: Spec) -> Callable[[Callable], Callable]:
    """Decorator: sets fn.requires. A callable receives the entry's kwargs (e.g. modality=)."""
    if not isinstance(spec, Requires) and not callable(spec):
        raise TypeError(f"requires() takes a Requires or a function of the kwargs, got {spec!r}")

    def decorator(fn: Callable) -> Callable:
        fn.requires = spec
        return fn

    return decorator


def requirements_of(fn: Callable, kwargs: Mapping[str, Any] | None = None) -> Requires:
    """fn's declared needs (seeing through functools.partial); Requires() if none."""
    kwargs = dict(kwargs or {})
    while isinstance(fn, functools.partial):
        kwargs = {**fn.keywords, **kwargs}
        fn = fn.func
    spec = getattr(fn, "requires", None)
    if spec is None:
        return Requires()
    if isinstance(spec, Requires):
        return spec
    result = spec(kwargs)
    if not isinstance(result, Requires):
        raise TypeError(f"{getattr(fn, '__name__', fn)}.requires returned {result!r}, not Requires")
    return result


def check_requirements(
    owners: Sequence[tuple[str, Requires]],
    batch_keys: Collection[str],
    output_keys: Collection[str],
) -> None:
    """ConfigError in ONE line naming every missing key and who needs it, and what the data /
    model provide, e.g. "evaluator 'zero_shot' needs batch key 'attr/color' (the data gives:
    image, label, text, text_mask); loss 'clip' needs model output 'emb/audio' (...)".

    `owners` are (description, needs) pairs such as ("evaluator 'zero_shot'", Requires(...)).
    """
    batch_keys, output_keys = set(batch_keys), set(output_keys)
    problems = []
    for owner, needs in owners:
        for kind, keys, given, source in (
            ("batch key", needs.batch, batch_keys, "the data gives"),
            ("model output", needs.outputs, output_keys, "the model gives"),
        ):
            missing = [k for k in keys if k not in given]
            if missing:
                names = ", ".join(repr(k) for k in missing)
                plural = "s" if len(missing) > 1 else ""
                provided = ", ".join(sorted(given)) or "nothing"
                problems.append(f"{owner} needs {kind}{plural} {names} ({source}: {provided})")
    if problems:
        raise ConfigError("; ".join(problems))
