"""Readers of folder sources (`image_folder`, `audio_folder`): the files' places and names
give their labels and splits (see crossjax.data.file_formats for the formats and Table)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from crossjax.data.file_formats import (
    DEFAULT_LABEL_PATTERN,
    SPLITS,
    Row,
    Table,
    split_options,
)
from crossjax.data.imaging import IMAGE_EXTENSIONS
from crossjax.errors import ConfigError, CrossjaxError


# -- image folder ---------------------------------------------------------------------------
def _class_images(folder: Path, rejected: list) -> dict[str, list[str]]:
    by_class = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            by_class[entry.name] = sorted(
                str(p) for p in entry.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            rejected.append((str(entry), "not in a class sub-folder"))
    return by_class


def read_image_folder(path: str, *, test_fraction: float, split_seed: int, **_: Any) -> Table:
    """Images in one sub-folder per class; `train/` + `test/` folders give the split."""
    root = Path(path)
    rejected: list[tuple[str, str]] = []
    rows: list[Row] = []
    row_splits: list[str] | None = None
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = {s: _class_images(root / s, rejected) for s in SPLITS}
        row_splits = []
        for s in SPLITS:
            rows += [Row(p, image=p, label=c) for c, ps in parts[s].items() for p in ps]
            row_splits += [s] * (len(rows) - len(row_splits))
        classes = sorted(set(parts["train"]) | set(parts["test"]))
    else:
        by_class = _class_images(root, rejected)
        rows = [Row(p, image=p, label=c) for c, ps in by_class.items() for p in ps]
        classes = sorted(by_class)
    if not classes:
        raise CrossjaxError(f"image folder {path} has no class sub-folders")
    return Table(
        rows, ("image", "label"), f"image folder {path}", row_splits, label_names=classes,
        files=[r.image for r in rows], rejected=rejected,
        **split_options(test_fraction, split_seed),
    )  # fmt: skip


# -- audio folder ---------------------------------------------------------------------------
def _pattern(field: str, value: str) -> re.Pattern:
    try:
        return re.compile(value)
    except re.error as e:
        raise ConfigError(
            f"data.source.{field}={value!r} is not a regular expression: {e}"
        ) from None


def read_audio_folder(
    path: str, *, label_pattern: str = "", test_pattern: str = "", test_fraction: float = 0.1,
    split_seed: int = 0, num_classes: int = 0, **_: Any,
) -> Table:  # fmt: skip
    """WAV files below folder `path` (searched recursively), labelled by file name or by
    class sub-folder; `test_pattern` picks the test files (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise CrossjaxError(f"audio folder {path} is not a folder; point data.source.path at one")
    wavs = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
    if not wavs:
        raise CrossjaxError(f"audio folder {path} holds no .wav files (searched recursively)")
    parts = [p.relative_to(root).parts for p in wavs]
    by_folder = (
        not label_pattern and all(len(q) >= 2 for q in parts) and len({q[0] for q in parts}) >= 2
    )
    names = _pattern("label_pattern", label_pattern or DEFAULT_LABEL_PATTERN)
    if "label" not in names.groupindex:
        raise ConfigError(
            f"data.source.label_pattern={label_pattern!r} needs a group named label, e.g. "
            f"{DEFAULT_LABEL_PATTERN!r}"
        )
    test = _pattern("test_pattern", test_pattern) if test_pattern else None
    rows = []
    for wav, part in zip(wavs, parts, strict=True):
        row = Row(str(wav.relative_to(root)), audio=str(wav))
        match = None if by_folder else names.search(wav.name)
        row.label = part[0] if by_folder else (match.group("label") if match else None)
        if not row.label:
            row.bad = f"the file name does not match data.source.label_pattern {names.pattern!r}"
        rows.append(row)
    row_splits = [("test" if test.search(w.name) else "train") for w in wavs] if test else None
    return Table(
        rows, ("audio", "label"), f"audio folder {path}", row_splits, files=[str(w) for w in wavs],
        **split_options(test_fraction, split_seed, num_classes),
    )  # fmt: skip
