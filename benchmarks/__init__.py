"""Benchmark scripts (run as `python benchmarks/NAME.py`) and what they share."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: str | Path, results) -> None:
    """Writes a benchmark's results as indented JSON to `path`, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
