"""Reading the user's sources into rows per split, before any decoding.

Four formats (see docs/train_on_your_data.md for layouts):

- `manifest`: a JSONL (one JSON object per line) or CSV (header row) file with any of the
  columns `image` (path), `text` (a caption; in JSONL also a list of captions), `audio`
  (WAV path), `label` (class name or integer id) and `split` ("train" / "test");
  relative paths are resolved against the manifest's folder.
- `coco`: COCO caption annotations (`images` with `id` and `file_name`, `annotations`
  with `image_id` and `caption`) plus an image folder: one row per image, all its
  captions.
- `idx`: MNIST-format files in one folder: `*train-images-idx3-ubyte[.gz]`,
  `*train-labels-idx1-ubyte[.gz]` and the same with `t10k` (or `test`).
- `image_folder`: one sub-folder per class (sorted names -> label ids), or `train/` and
  `test/` folders that each hold the class sub-folders.

Without an explicit split, a seeded `test_fraction` of the rows (per label, when there
are labels) is held out as "test". Problems found while reading (an empty caption, an
unknown image id) mark a row bad; decoding problems are found later, during conversion.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from crossjax.data.imaging import IMAGE_EXTENSIONS
from crossjax.errors import CrossjaxError

COLUMNS = ("image", "text", "audio", "label")
SPLITS = ("train", "test")


@dataclasses.dataclass
class Row:
    """One example to convert. `where` names it in messages ("line 4", a file path)."""

    where: str
    image: str | np.ndarray | None = None  # file path, or (H, W) uint8 pixels (idx)
    texts: list[str] | None = None  # captions
    audio: str | None = None  # WAV path
    label: str | None = None  # class name (ids come from Table.label_names)
    bad: str = ""  # why the row is unusable, when known before decoding


@dataclasses.dataclass
class Table:
    """A source read into rows: `splits` maps "train"/"test" to rows; `columns` is the
    subset of COLUMNS present; `label_names` the classes in id order; `files` every file
    the conversion reads (their sizes and times fingerprint the source)."""

    splits: dict[str, list[Row]]
    columns: tuple[str, ...]
    multi_caption: bool = False
    label_names: list[str] | None = None
    files: list[str] = dataclasses.field(default_factory=list)
    default_mode: str = "RGB"
    rejected: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def resolve(base: Path, value: str) -> str:
    """`value` as an absolute path, relative ones taken from `base`."""
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else base / path)


def holdout(groups: list[Any], fraction: float, seed: int) -> np.ndarray:
    """(N,) bool test mask: a seeded `fraction` of each group's rows (at least one row of
    every group with two or more rows, when fraction > 0)."""
    test = np.zeros(len(groups), bool)
    by_group: dict[str, list[int]] = collections.defaultdict(list)
    for i, group in enumerate(groups):
        by_group[str(group)].append(i)
    rng = np.random.default_rng([seed, 2718])
    for name in sorted(by_group):
        idx = rng.permutation(by_group[name])
        n_test = round(fraction * len(idx))
        if fraction > 0 and len(idx) >= 2:
            n_test = min(max(1, n_test), len(idx) - 1)
        test[idx[:n_test]] = True
    return test


def label_names_of(labels: list[str]) -> list[str]:
    """Class names in id order: "0".."K-1" when every label is an integer, else sorted."""
    if labels and all(label.isdigit() for label in labels):
        return [str(i) for i in range(max(int(label) for label in labels) + 1)]
    return sorted(set(labels))


def _split_rows(rows: list[Row], explicit: list[str] | None, fraction: float, seed: int):
    if explicit is not None:
        return {s: [r for r, e in zip(rows, explicit, strict=True) if e == s] for s in SPLITS}
    test = holdout([r.label or "" for r in rows], fraction, seed)
    return {
        "train": [r for r, t in zip(rows, test, strict=True) if not t],
        "test": [r for r, t in zip(rows, test, strict=True) if t],
    }


def _finish(table: Table, what: str) -> Table:
    for split in SPLITS:
        if not table.splits.get(split):
            raise CrossjaxError(
                f"{what} has no {split} rows; add some (or raise data.source.test_fraction)"
            )
    labels = [r.label for rows in table.splits.values() for r in rows if r.label and not r.bad]
    if "label" in table.columns:
        table.label_names = label_names_of(labels)
    return table


# -- manifest -----------------------------------------------------------------------------
def _manifest_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return [(f"line {i + 2}", row) for i, row in enumerate(csv.DictReader(f))]
    if suffix not in (".jsonl", ".json", ".ndjson"):
        raise CrossjaxError(f"manifest {path} must end in .jsonl or .csv")
    records = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CrossjaxError(f"manifest {path} line {i + 1} is not JSON: {e}") from None
                if not isinstance(record, dict):
                    raise CrossjaxError(f"manifest {path} line {i + 1} is not a JSON object")
                records.append((f"line {i + 1}", record))
    return records


def _texts(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def read_manifest(path: str, *, test_fraction: float, split_seed: int, **_: Any) -> Table:
    """Rows of a JSONL or CSV manifest (see the module docstring)."""
    manifest = Path(path)
    base = manifest.parent
    records = _manifest_records(manifest)
    if not records:
        raise CrossjaxError(f"manifest {path} has no rows")
    keys = set().union(*(r.keys() for _, r in records))
    columns = tuple(c for c in COLUMNS if c in keys)
    if not set(columns) & {"image", "text", "audio"}:
        raise CrossjaxError(
            f"manifest {path} has none of the columns image, text, audio (it has: "
            f"{', '.join(sorted(keys))})"
        )
    rows: list[Row] = []
    explicit: list[str] | None = [] if "split" in keys else None  # the split column
    files = [str(manifest)]
    for where, record in records:
        row = Row(where)
        for column in ("image", "audio"):
            value = str(record.get(column) or "").strip() if column in columns else ""
            if column in columns and not value:
                row.bad = row.bad or f"no {column}"
            elif value:
                setattr(row, column, resolve(base, value))
                files.append(getattr(row, column))
        if "text" in columns:
            row.texts = _texts(record.get("text"))
            row.bad = row.bad or ("" if row.texts else "empty caption")
        if "label" in columns:
            row.label = str(record.get("label") if record.get("label") is not None else "").strip()
            row.bad = row.bad or ("" if row.label else "no label")
        if explicit is not None:
            split = str(record.get("split") or "").strip()
            if split not in SPLITS:
                row.bad = row.bad or f"split {split!r} is not train or test"
            explicit.append(split)
        rows.append(row)
    multi = any(isinstance(r.get("text"), list) for _, r in records)
    splits = _split_rows(rows, explicit, test_fraction, split_seed)
    return _finish(Table(splits, columns, multi, files=files), f"manifest {path}")


# -- COCO captions ------------------------------------------------------------------------
def _coco_rows(annotations: str, images: str, rejected: list) -> tuple[list[Row], list[str]]:
    try:
        with open(annotations, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CrossjaxError(f"cannot read COCO annotations {annotations}: {e}") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise CrossjaxError(
            f"{annotations} is not COCO-format: it needs 'images' and 'annotations'"
        )
    captions: dict[Any, list[str]] = collections.defaultdict(list)
    ids = {image.get("id") for image in data["images"]}
    for ann in data["annotations"]:
        where = f"annotation {ann.get('id', '?')}"
        if ann.get("image_id") not in ids:
            rejected.append((where, f"unknown image_id {ann.get('image_id')!r}"))
        elif not str(ann.get("caption") or "").strip():
            rejected.append((where, "empty caption"))
        else:
            captions[ann["image_id"]].append(str(ann["caption"]).strip())
    rows, files = [], [annotations]
    for image in data["images"]:
        path = resolve(Path(images), str(image.get("file_name", "")))
        row = Row(path, image=path, texts=captions.get(image.get("id"), []))
        row.bad = "" if row.texts else "no caption"
        rows.append(row)
        files.append(path)
    return rows, files


def read_coco(
    path: str, *, images: str, test_path: str, test_images: str, test_fraction: float,
    split_seed: int, **_: Any,
) -> Table:  # fmt: skip
    """One row per image of COCO caption annotations, with every caption of the image."""
    rejected: list[tuple[str, str]] = []
    rows, files = _coco_rows(path, images or str(Path(path).parent), rejected)
    if test_path:
        test_rows, test_files = _coco_rows(
            test_path, test_images or str(Path(test_path).parent), rejected
        )
        splits = {"train": rows, "test": test_rows}
        files += test_files
    else:
        splits = _split_rows(rows, None, test_fraction, split_seed)
    table = Table(splits, ("image", "text"), True, files=files, rejected=rejected)
    return _finish(table, f"COCO annotations {path}")


# -- MNIST idx ------------------------------------------------------------------------------
def read_idx_file(path: str) -> np.ndarray:
    """An idx file (optionally gzipped) -> uint8 array: (N,) labels or (N, H, W) images."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08 or not 1 <= magic & 0xFF <= 3:  # 0x08 = unsigned byte
        raise CrossjaxError(f"{path} is not an idx file of bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise CrossjaxError(f"{path} holds {body.size} bytes, its header says {shape}")
    return body.reshape(shape)


def _find_idx(folder: Path, split_names: tuple[str, ...], kind: str) -> str:
    for name in split_names:
        found = sorted(folder.glob(f"*{name}-{kind}-idx*-ubyte*"))
        if found:
            return str(found[0])
    raise CrossjaxError(
        f"no {split_names[0]} {kind} idx file in {folder} (looked for "
        f"*{split_names[0]}-{kind}-idx?-ubyte[.gz])"
    )


def read_idx(path: str, **_: Any) -> Table:
    """MNIST-format train and t10k image/label files in folder `path`."""
    folder = Path(path)
    splits, files = {}, []
    for split, names in (("train", ("train",)), ("test", ("t10k", "test"))):
        images_path, labels_path = (
            _find_idx(folder, names, "images"),
            _find_idx(folder, names, "labels"),
        )
        images, labels = read_idx_file(images_path), read_idx_file(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise CrossjaxError(
                f"{images_path} {images.shape} and {labels_path} {labels.shape} do not match"
            )
        splits[split] = [
            Row(f"{Path(images_path).name}[{i}]", image=images[i], label=str(int(labels[i])))
            for i in range(len(images))
        ]
        files += [images_path, labels_path]
    return _finish(Table(splits, ("image", "label"), files=files, default_mode="L"), path)


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
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = {s: _class_images(root / s, rejected) for s in SPLITS}
        splits = {
            s: [Row(p, image=p, label=c) for c, ps in parts[s].items() for p in ps] for s in SPLITS
        }
        classes = sorted(set(parts["train"]) | set(parts["test"]))
    else:
        by_class = _class_images(root, rejected)
        rows = [Row(p, image=p, label=c) for c, ps in by_class.items() for p in ps]
        splits, classes = _split_rows(rows, None, test_fraction, split_seed), sorted(by_class)
    if not classes:
        raise CrossjaxError(f"image folder {path} has no class sub-folders")
    files = [r.image for rows in splits.values() for r in rows]
    table = _finish(Table(splits, ("image", "label"), files=files, rejected=rejected), path)
    table.label_names = classes
    return table


READERS = {
    "manifest": read_manifest,
    "coco": read_coco,
    "idx": read_idx,
    "image_folder": read_image_folder,
}
