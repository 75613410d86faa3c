"""Writes metrics to WORKDIR/metrics.jsonl and TensorBoard, and images to PNG + TensorBoard.

Only process 0 writes; on other processes every method is a no-op.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jax
import numpy as np
from PIL import Image


def _jsonable(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _replayed(line: str, step: int, including: tuple[str, ...]) -> bool:
    try:
        record = json.loads(line)
        at = int(record["step"])
    except (ValueError, KeyError, TypeError):
        return False  # not a record of ours (or a torn last line): leave it
    return at > step or (at == step and record.get("split") in including)


class MetricWriter:
    """One JSON object per event in metrics.jsonl: {"step", "split", <metric>: value, ...}."""

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True):
        self.workdir = Path(workdir)
        self.enabled = jax.process_index() == 0
        self._tensorboard = self.enabled and tensorboard
        self._tb_writer = None

    @property
    def _tb(self):
        # Opened at the first write: a run that fails before writing anything (a bad
        # rerun of a finished run) leaves no new event file behind.
        if self._tb_writer is None and self._tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: only the writer needs it

            self._tb_writer = SummaryWriter(str(self.workdir / "tensorboard"))
        return self._tb_writer

    def write_scalars(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split}
        record.update({k: _jsonable(v) for k, v in sorted(metrics.items())})
        with open(self.workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
            self._tb.flush()

    def discard_after(self, step: int, *, including: tuple[str, ...] = ()) -> None:
        """Drops the metrics.jsonl records of steps after `step` (and those at `step` of the
        splits in `including`): a resumed run writes them again, so none is duplicated."""
        path = self.workdir / "metrics.jsonl"
        if not self.enabled or not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not _replayed(line, step, including)]
        if len(kept) != len(lines):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, path)  # atomic: a crash leaves the old or the new file

    def write_image(self, step: int, name: str, image: np.ndarray) -> Path | None:
        """Saves an (H, W, C) float image in [0, 1] as WORKDIR/images/<name>.png."""
        if not self.enabled:
            return None
        path = save_png(self.workdir / "images" / f"{name}.png", image)
        if self._tb is not None:
            hwc = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
            self._tb.add_image(name, hwc, int(step), dataformats="HWC")
            self._tb.flush()
        return path

    def close(self) -> None:
        if self._tb_writer is not None:
            self._tb_writer.close()
        self._tb_writer, self._tensorboard = None, False


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Saves an (H, W, C) float image in [0, 1] (C = 1 or 3) as a PNG; returns the path."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape[-1] == 1:
        image = image[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(path)
    return path


def image_grid(rows: list[np.ndarray], pad: int = 1) -> np.ndarray:
    """Tiles rows of images, each (N, H, W, C), into one (R*(H+pad), N*(W+pad), C) picture."""
    n, h, w, c = rows[0].shape
    grid = np.ones((len(rows) * (h + pad) + pad, n * (w + pad) + pad, c), np.float32)
    for r, images in enumerate(rows):
        for i, img in enumerate(images):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            grid[y : y + h, x : x + w] = img
    return grid
