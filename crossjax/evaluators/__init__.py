"""Evaluators: extra evaluation beyond the per-example loss metrics, chosen in the config.

The contract (`EVALUATORS`, `EvalContext`, `parse_evaluators`, `evaluator_requirements`)
lives in `crossjax.evaluators.base`; this package re-exports it and imports the built-in
evaluators so they register themselves.
"""

from crossjax.evaluators import (  # noqa: F401 - imported to register the built-ins
    captioning,
    contrastive,
    crossmodal,
    generative,
    heads,
    label_inference,
    pictures,
    robustness,
)
from crossjax.evaluators.base import (
    EVALUATORS,
    EvalContext,
    evaluator_requirements,
    parse_evaluators,
)

__all__ = ["EVALUATORS", "EvalContext", "evaluator_requirements", "parse_evaluators"]
