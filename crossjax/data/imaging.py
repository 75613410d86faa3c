"""Image decoding and fitting to one size and colour mode, with Pillow.

Used when converting the user's image files (`crossjax.data.files`) and when a catalog
dataset's images must be resized (`data.image_size`, e.g. coco_captions' varying sizes).
Fitting = resize so the shorter side covers the target, then centre-crop: the aspect
ratio is kept and nothing is padded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

IMAGE_MODES = ("RGB", "L")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def channels_of(mode: str) -> int:
    """Channels C of images in `mode`: 3 for "RGB", 1 for "L"."""
    return 3 if mode == "RGB" else 1


def fit_pil_image(image: Image.Image, size: Sequence[int] | None, mode: str) -> np.ndarray:
    """A Pillow image -> (H, W, C) uint8 in `mode`; `size` = (H, W), or None to keep it.

    Resizes (bicubic, antialiased) so that the image covers (H, W), then centre-crops.
    """
    image = image.convert(mode)
    if size and tuple(size) != (image.height, image.width):
        height, width = int(size[0]), int(size[1])
        scale = max(height / image.height, width / image.width)
        new_w = max(width, round(image.width * scale))
        new_h = max(height, round(image.height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def fit_image_array(image: np.ndarray, size: Sequence[int] | None, mode: str | None) -> np.ndarray:
    """(H0, W0[, C0]) uint8 -> (H, W, C) uint8; `mode` None keeps the channels (1 or 3)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if mode is None:
        mode = "L" if array.ndim == 2 else "RGB"
    return fit_pil_image(Image.fromarray(array.astype(np.uint8)), size, mode)


def decode_image_file(path: str | os.PathLike, size: Sequence[int] | None, mode: str) -> np.ndarray:
    """Reads any Pillow-readable image file -> (H, W, C) uint8 (first frame of animations).

    Raises OSError (missing or undecodable file) or ValueError (bad image data).
    """
    with Image.open(path) as image:
        image.load()
        return fit_pil_image(image, size, mode)


def image_size_of(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file, reading only its header."""
    with Image.open(path) as image:
        return image.height, image.width


GREY_PIL_MODES = ("1", "L", "LA", "I", "I;16", "F")


def image_header(path: str | os.PathLike) -> tuple[int, int, str]:
    """(H, W, mode) of an image file from its header; mode "L" for grey images (Pillow
    modes 1, L, LA, I, F), else "RGB"."""
    with Image.open(path) as image:
        mode = "L" if image.mode in GREY_PIL_MODES else "RGB"
        return image.height, image.width, mode
