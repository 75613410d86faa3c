"""Training on your own files: each source is converted ONCE into a TFDS array_record
dataset in the data_dir, then read like any other dataset.

A config names the source (see `crossjax.config.base_config().data.source` and
docs/train_on_your_data.md):

    config.data.name = "files"
    config.data.source.format = "manifest"  # | "coco" | "idx" | "image_folder" | "audio_folder"
    config.data.source.path = "/data/pets/manifest.jsonl"

The converted dataset lives in `<data_dir>/crossjax_files/<format>_<name>_<hash>/`, where
the hash covers the source path, the options that shape the conversion (image size and
mode, split settings) and the size and modification time of every file read, so a
changed file or option converts again and an unchanged one is reused.

Converted features: `image` (H, W, C) uint8 (decoded with Pillow, resized on the shorter
side and centre-cropped to `data.image_size`, default the first image's size, in
`data.image_mode`, default the source's own: see `source_image_shape`), `text` (one caption: Text; several: Sequence of Text), `audio` (T,)
int16 (mono 16-bit PCM WAV read with `wave`; the sample rate goes to the dataset metadata,
every file must share the first file's), `label` (ClassLabel), `origin` (row or path).
Bad rows (missing file, undecodable image, unreadable or truncated WAV, empty caption,
no label, a label outside data.source.num_classes) are skipped and reported in ONE
warning of logger "crossjax.data.files" (COCO: images and captions counted apart); a
split with no usable row is a CrossjaxError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from crossjax.data import wav
from crossjax.data.file_formats import (
    SPLITS,
    Row,
    Table,
    named,
    read_coco,
    read_idx,
    read_manifest,
)
from crossjax.data.folder_formats import read_audio_folder, read_image_folder
from crossjax.data.imaging import (
    IMAGE_MODES,
    channels_of,
    decode_image_file,
    fit_image_array,
    image_header,
)
from crossjax.data.tfds_source import preparing
from crossjax.errors import ConfigError, CrossjaxError

log = logging.getLogger(__name__)
DATASET_NAME = "crossjax_files"
FILES_VERSION = "1.0.0"


READERS = {
    "manifest": read_manifest,
    "coco": read_coco,
    "idx": read_idx,
    "image_folder": read_image_folder,
    "audio_folder": read_audio_folder,
}


class BadRow(Exception):
    """A row that cannot be converted; the message says why."""


# -- the source, as the config describes it ------------------------------------------------
def source_options(data_config) -> dict[str, Any]:
    """The validated `data.source` section plus image settings, as a plain dict."""
    source = dict(data_config.get("source", None) or {})
    fmt = source.get("format") or ""
    if fmt not in READERS:
        raise ConfigError(
            f"data.source.format={fmt!r}; valid: {', '.join(READERS)} (data.name='files')"
        )
    path = os.path.expanduser(str(source.get("path") or ""))
    if not path:
        raise ConfigError(f"data.source.path is empty; point it at your {fmt} source")
    if not os.path.exists(path):
        raise ConfigError(f"data.source.path {path} does not exist")
    for key in ("test_path", "images", "test_images"):
        value = os.path.expanduser(str(source.get(key) or ""))
        if value and not os.path.exists(value):
            raise ConfigError(f"data.source.{key} {value} does not exist")
        source[key] = os.path.abspath(value) if value else ""
    mode = data_config.get("image_mode", "") or ""
    if mode and mode not in IMAGE_MODES:
        raise ConfigError(f"data.image_mode={mode!r}; valid: {', '.join(IMAGE_MODES)} or ''")
    return {
        "format": fmt,
        "path": os.path.abspath(path),
        "images": source["images"],
        "test_path": source["test_path"],
        "test_images": source["test_images"],
        "test_fraction": float(source.get("test_fraction", 0.1)),
        "split_seed": int(source.get("split_seed", 0)),
        "label_pattern": str(source.get("label_pattern", "") or ""),
        "test_pattern": str(source.get("test_pattern", "") or ""),
        "num_classes": _num_classes(source.get("num_classes", 0)),
        "image_size": [int(s) for s in (data_config.get("image_size", ()) or ())],
        "image_mode": mode,
    }


def _num_classes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"data.source.num_classes={value!r}; valid: an integer >= 0 (0 = infer)")
    return value


def _file_stamp(path: str) -> list:
    try:
        stat = os.stat(path)
        return [path, stat.st_size, stat.st_mtime_ns]
    except OSError:
        return [path, "missing"]


def converted_name(options: dict[str, Any], table: Table) -> str:
    """`<format>_<source name>_<12 hex>`: the hash covers options and every file's stamp."""
    digest = hashlib.sha256(json.dumps([FILES_VERSION, options], sort_keys=True).encode())
    for path in table.files:
        digest.update(json.dumps(_file_stamp(path)).encode())
    stem = re.sub(r"[^a-z0-9]+", "_", Path(options["path"]).stem.lower()).strip("_") or "source"
    return f"{options['format']}_{stem[:40]}_{digest.hexdigest()[:12]}"


# -- decoding -------------------------------------------------------------------------------
def read_wav(path: str) -> tuple[np.ndarray, int]:
    """A mono 16-bit PCM WAV file -> (samples (T,) int16, sample rate). Raises BadRow."""
    try:
        return wav.read_wav(path)
    except wav.BadWav as e:
        raise BadRow(str(e)) from None


def _first_sample_rate(table: Table, source: str) -> int:
    """The first readable WAV's rate; a CrossjaxError if another file's rate differs."""
    first: tuple[str, int] | None = None
    for rows in table.splits.values():
        for row in rows:
            if row.bad or not row.audio:
                continue
            rate = wav.wav_rate(row.audio)
            if rate is None:
                continue  # reported as a bad row during conversion
            if first is None:
                first = (row.audio, rate)
            elif rate != first[1]:
                raise CrossjaxError(
                    f"{row.audio} is sampled at {rate} Hz but {first[0]} at {first[1]} Hz; "
                    "resample your WAV files to one rate"
                )
    if first is None:
        raise CrossjaxError(f"no WAV file of {source} can be read")
    return first[1]


GREY_CHECKED = 16  # images looked at before a source is called grey


def source_image_shape(table: Table, source: str) -> tuple[int, int, str]:
    """(H, W, mode) of the source's images: the first readable image's size (every image
    is fitted to it by default) and "L" when the first 16 readable images are all grey,
    else "RGB" (idx arrays: their own size, "L")."""
    first, grey_seen, first_error = None, 0, ""
    for row in table.splits["train"] + table.splits["test"]:
        if isinstance(row.image, np.ndarray):
            return (*row.image.shape[:2], table.default_mode)
        try:
            height, width, mode = image_header(row.image)
        except Exception as e:  # noqa: BLE001 - reported as a bad row during conversion
            first_error = first_error or f"{row.image}: {type(e).__name__}"
            continue
        first = first or (height, width)
        if mode != "L":
            return (*first, "RGB")
        grey_seen += 1
        if grey_seen == GREY_CHECKED:
            break
    if first is None:
        suffix = f" (first: {first_error})" if first_error else ""
        raise CrossjaxError(f"no image of {source} can be read{suffix}")
    return (*first, "L")


def log_image_fit(source: str, own: tuple[int, int, str], fitted: tuple[int, int, str]) -> None:
    """ONE info line when data.image_size / image_mode resize or recolour the source's images."""
    if tuple(own) != tuple(fitted):
        log.info(
            "data.image_size/image_mode fit the %dx%d %s images of %s to %dx%d %s "
            "(set them to () and '' to keep the source's own)",
            *own, source, *fitted,
        )  # fmt: skip


# -- the builder ----------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class FilesConfig(tfds.core.BuilderConfig):
    """One converted source: its rows and the shapes of its features."""

    table: Table | None = dataclasses.field(default=None, repr=False)  # TFDS logs the repr
    image_shape: tuple[int, int, int] | None = None
    image_mode: str = "RGB"
    sample_rate: int | None = None


class CrossjaxFiles(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The user's files converted to array_record (constructed with a FilesConfig)."""

    VERSION = tfds.core.Version(FILES_VERSION)
    RELEASE_NOTES = {FILES_VERSION: "Initial release."}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.bad_rows: list[tuple[str, str]] = []

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        table = cfg.table
        features: dict[str, Any] = {"origin": tfds.features.Text()}
        if "image" in table.columns:
            features["image"] = tfds.features.Tensor(shape=cfg.image_shape, dtype=np.uint8)
        if "text" in table.columns:
            text = tfds.features.Text()
            features["text"] = tfds.features.Sequence(text) if table.multi_caption else text
        if "audio" in table.columns:
            features["audio"] = tfds.features.Tensor(shape=(None,), dtype=np.int16)
        if "label" in table.columns:
            features["label"] = tfds.features.ClassLabel(names=table.label_names)
        metadata = tfds.core.MetadataDict(sample_rate=cfg.sample_rate) if cfg.sample_rate else None
        return tfds.core.DatasetInfo(
            builder=self,
            description=cfg.description,
            features=tfds.features.FeaturesDict(features),
            metadata=metadata,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the files are local
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        label_ids = {name: i for i, name in enumerate(self.builder_config.table.label_names or [])}
        for i, row in enumerate(self.builder_config.table.splits[split]):
            try:
                example = self._example(row, label_ids)
            except BadRow as e:
                self.bad_rows.append((row.where, str(e)))
                continue
            yield f"{split}_{i}", example

    def _example(self, row: Row, label_ids: dict[str, int]) -> dict[str, Any]:
        if row.bad:
            raise BadRow(row.bad)
        cfg = self.builder_config
        columns = cfg.table.columns
        example: dict[str, Any] = {"origin": row.where}
        if "image" in columns:
            size = cfg.image_shape[:2]
            if isinstance(row.image, np.ndarray):
                example["image"] = fit_image_array(row.image, size, cfg.image_mode)
            elif not os.path.exists(row.image):
                raise BadRow(f"missing file {row.image}")
            else:
                try:
                    example["image"] = decode_image_file(row.image, size, cfg.image_mode)
                except Exception as e:  # noqa: BLE001 - Pillow raises many kinds
                    raise BadRow(f"cannot decode image {row.image} ({type(e).__name__})") from None
        if "text" in columns:
            example["text"] = row.texts if cfg.table.multi_caption else row.texts[0]
        if "audio" in columns:
            example["audio"] = read_wav(row.audio)[0]
        if "label" in columns:
            label = label_ids.get(row.label)
            if label is None and row.label.isdigit():
                label = int(row.label)
            example["label"] = label
        return example


# -- entry point ----------------------------------------------------------------------------
def report_bad_rows(table: Table, source: str, decoded_bad: list[tuple[str, str]]) -> None:
    """ONE warning naming the first few bad rows (and bad captions, counted apart, where a
    source has several per image); nothing when there are none."""
    bad = table.rejected + table.bad_rows + decoded_bad
    total = len(table.rows) + len(table.rejected)
    parts = [f"{len(bad)} of {total} {table.unit} ({named(bad)})"] if bad else []
    if table.rejected_captions:
        captions = table.rejected_captions
        parts.append(f"{len(captions)} of {table.num_captions} captions ({named(captions)})")
    if parts:
        log.warning("Skipped %s of %s", " and ".join(parts), source)


def _convert(builder: CrossjaxFiles, table: Table, source: str) -> None:
    log.info("Converting %s into %s (once; later runs reuse it)", source, builder.data_dir)
    try:
        builder.download_and_prepare()
    except AssertionError as e:  # TFDS refuses to write a split without examples
        shutil.rmtree(builder.data_dir, ignore_errors=True)
        for stale in Path(builder.data_dir).parent.glob(f"incomplete*{FILES_VERSION}"):
            shutil.rmtree(stale, ignore_errors=True)
        if "No examples were yielded" not in str(e):
            raise
        split = re.search(r'split "(\w+)"', str(e))
        report_bad_rows(table, source, builder.bad_rows)
        raise CrossjaxError(
            f"every row of the {split.group(1) if split else ''} split of {source} is bad "
            f"({named(table.bad_rows + builder.bad_rows)})"
        ) from None
    report_bad_rows(table, source, builder.bad_rows)


def load_files_sources(data_config, data_dir: str, splits: list[str]):
    """Converts `data.source` once (reused while its files and options are unchanged)
    and returns ({split: random-access source}, DatasetInfo), like load_split_sources."""
    options = source_options(data_config)
    table = READERS[options["format"]](**{k: v for k, v in options.items() if k != "format"})
    name = converted_name(options, table)
    source = f"{options['format']} source {options['path']}"
    directory = Path(data_dir) / DATASET_NAME / name / FILES_VERSION
    with preparing(data_dir, f"{DATASET_NAME}/{name}"):  # once per data_dir
        if (directory / "dataset_info.json").exists():
            builder = tfds.builder_from_directory(str(directory))
        else:
            table.splits  # noqa: B018 - checks the rows and splits them (before any decoding)
            mode, image_shape = options["image_mode"] or table.default_mode, None
            if "image" in table.columns:
                own = source_image_shape(table, source)
                size, mode = (
                    tuple(options["image_size"]) or own[:2],
                    options["image_mode"] or own[2],
                )
                log_image_fit(source, own, (*size, mode))
                image_shape = (int(size[0]), int(size[1]), channels_of(mode))
            builder = CrossjaxFiles(
                config=FilesConfig(
                    name=name,
                    description=f"Converted from {source} by crossjax.data.files.",
                    table=table,
                    image_shape=image_shape,
                    image_mode=mode,
                    sample_rate=_first_sample_rate(table, source)
                    if "audio" in table.columns
                    else None,
                ),
                data_dir=data_dir,
                file_format="array_record",
            )
            _convert(builder, table, source)
    available = list(builder.info.splits.keys())
    result = {}
    for split in splits:
        base = re.sub(r"\[[^\]]*\]", "", split)
        if base not in available:
            raise ConfigError(
                f"converted {source} has no split {split!r}; it has: {', '.join(available)}"
            )
        try:
            result[split] = builder.as_data_source(split=split)
        except ValueError as e:  # e.g. a slice past the end
            raise ConfigError(f"bad split {split!r} of converted {source}: {e}") from None
    return result, builder.info
