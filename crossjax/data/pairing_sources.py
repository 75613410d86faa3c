"""Where the digit pairings (`crossjax.data.pairings`) read MNIST and spoken digits: the
TFDS catalog (`mnist`, `spoken_digit`) in the builder's data_dir, or local files.

Local files: a folder of the four MNIST idx files (`*train-images-idx3-ubyte[.gz]`,
`*t10k-...` or `*test-...`, read with `crossjax.data.file_formats.read_idx_file`), and
a folder of Free Spoken Digit Dataset recordings named `{digit}_{speaker}_{take}.wav`
(mono 16-bit PCM, read with `crossjax.data.wav.read_wav`). A recording that cannot
be read or whose name carries no digit is skipped, and all of them are named in one
warning; an unusable folder is a one-line CrossjaxError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from crossjax.data.wav import BadWav, read_wav
from crossjax.errors import CrossjaxError

log = logging.getLogger(__name__)
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)(\.wav)?$")


@dataclasses.dataclass
class DigitImages:
    """The images of one MNIST split: `image(i)` -> (28, 28, 1) uint8; labels (N,) int64."""

    image: Callable[[int], np.ndarray]
    labels: np.ndarray


@dataclasses.dataclass
class Recordings:
    """Every spoken digit: `audio(j)` -> (T,) integer waveform; labels (P,) int64; names
    (P,) file names, whose FSDD take numbers give the official split."""

    audio: Callable[[int], np.ndarray]
    labels: np.ndarray
    names: list[str]


def catalog_images(source, limit: int) -> DigitImages:
    """An MNIST split read through TFDS (`source`: a random-access TFDS source)."""
    labels = np.array([int(source[i]["label"]) for i in range(limit)], np.int64)
    return DigitImages(lambda i: np.asarray(source[i]["image"], np.uint8), labels)


def catalog_recordings(source, limit: int) -> Recordings:
    """spoken_digit's one split read through TFDS."""
    names = [source[j]["audio/filename"] for j in range(limit)]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    labels = np.array([int(source[j]["label"]) for j in range(limit)], np.int64)
    return Recordings(lambda j: np.asarray(source[j]["audio"]), labels, names)


def local_images(folder: str, split: str, limit: int | None) -> DigitImages:
    """An MNIST split from the idx files in `folder` (the first `limit` digits)."""
    from crossjax.data.file_formats import find_idx_file, read_idx_file  # local: Pillow & co.

    root = Path(folder)
    if not root.is_dir():
        raise CrossjaxError(f"data.pairing_sources.mnist={folder!r} is not a folder")
    fix = "; point data.pairing_sources.mnist at the folder of the four idx files"
    images = read_idx_file(find_idx_file(root, split, "images", what="MNIST ", fix=fix))
    labels = read_idx_file(find_idx_file(root, split, "labels", what="MNIST ", fix=fix))
    labels = labels.astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels) or images.shape[1:] != (28, 28):
        raise CrossjaxError(
            f"MNIST {split} idx files in {folder} hold {images.shape} images and "
            f"{labels.shape} labels; expected (N, 28, 28) and (N,)"
        )
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise CrossjaxError(
            f"MNIST {split} labels in {folder} include {labels[bad[0]]}; valid: 0-9"
        )
    n = len(labels) if limit is None else min(limit, len(labels))
    return DigitImages(lambda i: images[i][..., None], labels[:n])


def local_recordings(folder: str) -> Recordings:
    """Every FSDD recording `{digit}_{speaker}_{take}.wav` in `folder`, sorted by name
    (all of them even for a tiny pairing: the first N names would hold few digits)."""
    from crossjax.data.file_formats import named  # local: it imports Pillow & co.

    root = Path(folder)
    paths = sorted(root.glob("*.wav")) if root.is_dir() else []
    if not paths:
        raise CrossjaxError(
            f"data.pairing_sources.spoken_digit={folder!r} holds no .wav recordings; point it "
            "at the FSDD recordings folder ({digit}_{speaker}_{take}.wav)"
        )
    waves, labels, names, bad = [], [], [], []
    for path in paths:
        match = FSDD_NAME.match(path.name)
        if not match:
            bad.append((path.name, "not named {digit}_{speaker}_{take}.wav"))
            continue
        try:
            audio, _ = read_wav(str(path))
        except BadWav as e:
            bad.append((path.name, str(e)))
            continue
        waves.append(audio)
        labels.append(int(match.group(1)))
        names.append(path.name)
    if bad:
        log.warning(
            "Skipped %d of %d recordings in %s: %s", len(bad), len(paths), folder, named(bad)
        )
    if not waves:
        raise CrossjaxError(f"no usable recording in {folder}: {named(bad[:1])}")
    return Recordings(lambda j: waves[j], np.array(labels, np.int64), names)


def sources_hash(paths: Mapping[str, str]) -> str:
    """12 hex digits naming a set of local source paths (resolved), so builds from
    different files never share a dataset directory."""
    text = "\n".join(f"{k}={Path(v).resolve() if v else ''}" for k, v in sorted(paths.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
