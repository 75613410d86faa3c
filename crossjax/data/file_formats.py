r"""Reading the user's sources into rows per split, before any decoding.

Five formats (see docs/train_on_your_data.md for layouts):

- `manifest`: a JSONL (one JSON object per line) or CSV (header row) file with any of the
  columns `image` (path), `text` (a caption; in JSONL also a list of captions), `audio`
  (WAV path), `label` (class name or integer id) and `split` ("train" / "test");
  relative paths are resolved against the manifest's folder.
- `coco`: COCO caption annotations (`images` with `id` and `file_name`, `annotations`
  with `image_id` and `caption`) plus an image folder: one row per image, all its
  captions.
- `idx`: MNIST-format files in one folder: `*train-images-idx3-ubyte[.gz]`,
  `*train-labels-idx1-ubyte[.gz]` and the same with `t10k` (or `test`).
- `image_folder` (crossjax.data.folder_formats): one sub-folder per class (sorted names -> label ids), or `train/` and
  `test/` folders that each hold the class sub-folders.
- `audio_folder` (crossjax.data.folder_formats): WAV files anywhere below one folder, labelled by file name (the
  `label` group of `label_pattern`; default: the part before the first "_", as in FSDD's
  `{digit}_{speaker}_{take}.wav`), or by class sub-folder when `label_pattern` is ""
  and the WAVs sit in two or more sub-folders (none loose in the folder itself). Files
  whose name matches `test_pattern` (searched in the name; FSDD: `_[0-4]\.wav$`) are the
  test split.

Reading is cheap: a reader lists rows and what it knows of their split. The split itself
(`Table.splits`) is made only when a source is converted: cheap checks first mark rows
bad (a missing or unreadable image or WAV, a truncated WAV, a label outside
`num_classes` classes), so that a seeded `test_fraction` hold-out (per label, when there
are labels) is drawn from usable rows only. Decoding problems found later, during
conversion, are bad rows too.
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

from crossjax.data.imaging import image_size_of
from crossjax.data.wav import wav_problem
from crossjax.errors import CrossjaxError

COLUMNS = ("image", "text", "audio", "label")
SPLITS = ("train", "test")
DEFAULT_LABEL_PATTERN = r"^(?P<label>[^_]+)_"  # FSDD: "7_jackson_32.wav" -> "7"
MAX_NAMED = 5  # bad rows named in a message


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
    """A source read into rows. `row_splits` gives each row's split ("train"/"test") where
    the source says it, None for a seeded hold-out of `test_fraction`; `splits` (made on
    first use, see `split`) maps "train"/"test" to usable rows. `columns` is the subset of
    COLUMNS present; `label_names` the classes in id order; `files` every file the
    conversion reads (their sizes and times fingerprint the source); `rejected` entries
    that are not rows (a stray file), `rejected_captions` caption annotations (of
    `num_captions`) dropped; `unit` names the rows in messages ("rows", "images")."""

    rows: list[Row]
    columns: tuple[str, ...]
    what: str
    row_splits: list[str] | None = None
    multi_caption: bool = False
    label_names: list[str] | None = None
    files: list[str] = dataclasses.field(default_factory=list)
    default_mode: str = "RGB"
    rejected: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    rejected_captions: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    num_captions: int = 0
    unit: str = "rows"
    test_fraction: float = 0.1
    split_seed: int = 0
    num_classes: int = 0
    bad_rows: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    _splits: dict[str, list[Row]] | None = dataclasses.field(default=None, repr=False)

    @property
    def splits(self) -> dict[str, list[Row]]:
        """{"train": rows, "test": rows} of usable rows (made by `split` on first use)."""
        if self._splits is None:
            self._splits = split_rows(self)
        return self._splits


def row_problem(row: Row) -> str:
    """Why `row` is unusable, from cheap checks ("" when it passes): its image file's
    header, its WAV file read in full (a truncated WAV is found only so)."""
    if row.bad:
        return row.bad
    if isinstance(row.image, str):
        name = os.path.basename(row.image)
        if not os.path.exists(row.image):
            return f"missing file {name}"
        try:
            image_size_of(row.image)
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds
            return f"cannot decode image {name} ({type(e).__name__})"
    if row.audio:
        return wav_problem(row.audio)
    return ""


def _label_problem(label: str | None, num_classes: int) -> str:
    if num_classes and label is not None and label.isdigit() and int(label) >= num_classes:
        return f"label {label} is outside the {num_classes} classes (data.source.num_classes)"
    return ""


def named(bad: list[tuple[str, str]]) -> str:
    """The first few bad entries as "where: why; ..." (with how many more)."""
    text = "; ".join(f"{where}: {why}" for where, why in bad[:MAX_NAMED])
    return text + (f"; and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else "")


def split_rows(table: Table) -> dict[str, list[Row]]:
    """Marks unusable rows bad (`row_problem`, labels outside `num_classes`; they go to
    `table.bad_rows`), then splits the usable ones: by `row_splits`, else a seeded
    `test_fraction` hold-out per label. Sets `label_names`. CrossjaxError for an empty split."""
    usable = []
    for i, row in enumerate(table.rows):
        row.bad = row_problem(row) or _label_problem(row.label, table.num_classes)
        if row.bad:
            table.bad_rows.append((row.where, row.bad))
        else:
            usable.append(i)
    if table.row_splits is not None:
        splits = {s: [table.rows[i] for i in usable if table.row_splits[i] == s] for s in SPLITS}
    else:
        labels = [table.rows[i].label or "" for i in usable]
        test = holdout(labels, table.test_fraction, table.split_seed)
        splits = {
            "train": [table.rows[i] for i, t in zip(usable, test, strict=True) if not t],
            "test": [table.rows[i] for i, t in zip(usable, test, strict=True) if t],
        }
    for split in SPLITS:
        if splits[split]:
            continue
        if not usable or table.row_splits is not None and split in table.row_splits:
            which = f"the {split} split of " if usable else ""
            raise CrossjaxError(
                f"every row of {which}{table.what} is bad ({named(table.bad_rows)})"
            )
        raise CrossjaxError(
            f"{table.what} has no {split} rows; add some (or raise data.source.test_fraction)"
        )
    if "label" in table.columns and table.label_names is None:
        table.label_names = _label_names(splits, table)
    return splits


def _label_names(splits: dict[str, list[Row]], table: Table) -> list[str]:
    labels = [r.label for rows in splits.values() for r in rows if r.label]
    names = label_names_of(labels)
    if table.num_classes and all(label.isdigit() for label in labels):
        return [str(i) for i in range(table.num_classes)]
    if table.num_classes and len(names) != table.num_classes:
        raise CrossjaxError(
            f"{table.what} has {len(names)} classes ({', '.join(names[:10])}) but "
            f"data.source.num_classes={table.num_classes}; set it to {len(names)} or 0"
        )
    return names


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


def split_options(test_fraction: float, split_seed: int, num_classes: int = 0) -> dict:
    return {"test_fraction": test_fraction, "split_seed": split_seed, "num_classes": num_classes}


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


def read_manifest(
    path: str, *, test_fraction: float, split_seed: int, num_classes: int = 0, **_: Any
) -> Table:
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
    return Table(
        rows, columns, f"manifest {path}", explicit, multi, files=files,
        **split_options(test_fraction, split_seed, num_classes),
    )  # fmt: skip


# -- COCO captions ------------------------------------------------------------------------
def _coco_rows(annotations: str, images: str, rejected: list) -> tuple[list[Row], list[str], int]:
    """One row per image with its captions, the files read, and the number of caption
    annotations (bad ones are appended to `rejected`)."""
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
    return rows, files, len(data["annotations"])


def read_coco(
    path: str, *, images: str, test_path: str, test_images: str, test_fraction: float,
    split_seed: int, **_: Any,
) -> Table:  # fmt: skip
    """One row per image of COCO caption annotations, with every caption of the image."""
    rejected: list[tuple[str, str]] = []
    rows, files, num_captions = _coco_rows(path, images or str(Path(path).parent), rejected)
    row_splits = None
    if test_path:
        test_rows, test_files, test_captions = _coco_rows(
            test_path, test_images or str(Path(test_path).parent), rejected
        )
        row_splits = ["train"] * len(rows) + ["test"] * len(test_rows)
        rows, files, num_captions = (
            rows + test_rows,
            files + test_files,
            num_captions + test_captions,
        )
    return Table(
        rows, ("image", "text"), f"COCO annotations {path}", row_splits, True, files=files,
        rejected_captions=rejected, num_captions=num_captions, unit="images",
        **split_options(test_fraction, split_seed),
    )  # fmt: skip


# -- MNIST idx ------------------------------------------------------------------------------
IDX_MAGIC = {1: 0x0801, 3: 0x0803}  # unsigned bytes: labels (N,), images (N, H, W)


def read_idx_file(path: str, ndim: int | None = None) -> np.ndarray:
    """An idx file (optionally gzipped) -> uint8 array: (N,) labels or (N, H, W) images.
    `ndim` 1 or 3 is the one expected. A file that is not one is a one-line CrossjaxError."""
    expected = f"{IDX_MAGIC[ndim]:#06x}" if ndim else "0x0801 (labels) or 0x0803 (images)"
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise CrossjaxError(f"cannot read idx file {path} ({e})") from None
    magic = int.from_bytes(data[:4], "big")
    if len(data) < 4 or magic != IDX_MAGIC.get(ndim or magic & 0xFF):
        raise CrossjaxError(
            f"{path} is not an idx file of the expected kind: magic {magic:#06x}, "
            f"expected {expected} (unsigned bytes)"
        )
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, np.uint8, offset=min(len(data), 4 + 4 * ndim))
    if body.size != int(np.prod(shape)):
        raise CrossjaxError(f"{path} holds {body.size} bytes, its header says {shape}")
    return body.reshape(shape)


# The idx files of each split: MNIST's names, or "test" for sets that renamed t10k.
IDX_SPLIT_NAMES = {"train": ("train",), "test": ("t10k", "test")}


def find_idx_file(folder: Path, split: str, kind: str, *, what: str = "", fix: str = "") -> str:
    """The `kind` ("images" / "labels") idx file of `split` in `folder`; a CrossjaxError
    naming the pattern looked for (`what` prefixes the set's name, `fix` ends it)."""
    names = IDX_SPLIT_NAMES[split]
    for name in names:
        found = sorted(folder.glob(f"*{name}-{kind}-idx*-ubyte*"))
        if found:
            return str(found[0])
    raise CrossjaxError(
        f"no {what}{split} {kind} idx file in {folder} (looked for "
        f"*{names[0]}-{kind}-idx?-ubyte[.gz]){fix}"
    )


def read_idx(
    path: str, *, num_classes: int = 0, test_fraction: float = 0.1, split_seed: int = 0, **_: Any
) -> Table:
    """MNIST-format train and t10k image/label files in folder `path`."""
    folder = Path(path)
    rows, row_splits, files = [], [], []
    for split in SPLITS:
        images_path, labels_path = (
            find_idx_file(folder, split, "images"),
            find_idx_file(folder, split, "labels"),
        )
        images, labels = read_idx_file(images_path, 3), read_idx_file(labels_path, 1)
        if len(images) != len(labels):
            raise CrossjaxError(
                f"{images_path} {images.shape} and {labels_path} {labels.shape} do not match"
            )
        rows += [
            Row(f"{Path(images_path).name}[{i}]", image=images[i], label=str(int(labels[i])))
            for i in range(len(images))
        ]
        row_splits += [split] * len(images)
        files += [images_path, labels_path]
    return Table(
        rows, ("image", "label"), f"idx folder {path}", row_splits, files=files,
        default_mode="L", **split_options(test_fraction, split_seed, num_classes),
    )  # fmt: skip
