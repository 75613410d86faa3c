"""crossjax_shapes: procedurally rendered 32x32 scenes of one or two objects, with captions.

Features (per example):

- `image`: Tensor (32, 32, 3) uint8: one or two anti-aliased objects on a varied background
  (a smooth two-colour gradient of low saturation, plus low-contrast noise, stripes,
  checks or blotches).
- `text`: Text (bytes when read back): a caption naming every attribute, from a small
  grammar with synonyms and word orders, e.g. "a small red circle left of a large blue
  square", "to the right of a tiny red disc is a big blue box" (see `shape_captions`).
- `num_objects`: Tensor () int32: 1 or 2 (2 with probability `two_object_prob`).
- `color`, `shape`, `size`: Tensor (2,) int32: indices into `COLORS`, `SHAPES`, `SIZES`
  per object; -1 for an absent second object.
- `relation`: Tensor () int32: -1 for one object, else the index into `RELATIONS` of
  "object0 REL object1". Canonical form: object 0 is the left object (REL = 0, "left of")
  or the upper one (REL = 2, "above"), so the relation says whether the pair is side by
  side or stacked; captions state it either way round, and `parse_caption` maps both back.
- `label`: ClassLabel over `SHAPES`: the shape of object 0 (the left or upper object).

Geometry: the two objects are separated along the relation's axis so that their extents do
not overlap (gap >= `MIN_GAP` px), and the offset along the other axis is at most
`MAX_CROSS_RATIO` times the separation, so the relation is visually unambiguous. Sizes
"small" and "large" have radius `RADIUS` = (3.5, 6.0) px.

Splits: `train` (`num_train` scenes) and `test` (`num_test`); example i of a split is drawn
from a numpy Generator seeded by (config seed, split, i), so generation is reproducible
and train and test come from different random streams.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from crossjax.data.shape_captions import (
    COLORS,
    RELATIONS,
    SHAPES,
    SIZES,
    caption_scene,
    empty_attributes,
    parse_caption,
)

__all__ = [
    "COLORS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "CrossjaxShapes",
    "ShapesConfig",
    "caption_scene",
    "draw_scene",
    "parse_caption",
    "render_scene",
    "sample_scene",
]

IMAGE_SIZE = 32
RADIUS = (3.5, 6.0)  # px, per size index; two large objects still fit side by side
# Half-extent of each shape as a multiple of its radius (for placement and overlap checks).
_EXTENT = (1.0, 0.85, 1.15, 1.0, 1.15)
MIN_GAP = 1.5  # px between the two objects' extents along the relation axis
MAX_CROSS_RATIO = 0.5  # offset across the relation axis / separation along it
COLOR_RGB = np.array(
    [[225, 35, 35], [35, 195, 55], [45, 85, 240], [245, 225, 35], [170, 55, 215],
     [35, 215, 225], [248, 248, 248]], dtype=np.float64,
)  # fmt: skip
COLOR_JITTER = 12.0  # per-channel uniform jitter of object colours
_SUPERSAMPLE = 4  # sub-pixels per pixel side for anti-aliasing
_SPLIT_IDS = {"train": 0, "test": 1}
_MAX_TRIES = 100_000


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Sizes and seed of a `crossjax_shapes` variant.

    seed: base seed of every scene. num_train / num_test: scenes per split.
    two_object_prob: probability that a scene has two objects.
    """

    seed: int = 0
    num_train: int = 20000
    num_test: int = 2000
    two_object_prob: float = 0.5


def sample_scene(rng: np.random.Generator, *, two_object_prob: float = 0.5) -> dict:
    """Random scene attributes in the dataset layout, plus "centers": (2, 2) float (x, y).

    Centres are in pixel units (the image spans [0, 32]); absent objects get -1.
    """
    scene = empty_attributes()
    scene["centers"] = np.full((2, 2), -1.0)
    num = 2 if rng.random() < two_object_prob else 1
    scene["num_objects"] = num
    for key, vocab in (("color", COLORS), ("shape", SHAPES), ("size", SIZES)):
        scene[key][:num] = rng.integers(len(vocab), size=num)
    extents = [
        RADIUS[scene["size"][i]] * _EXTENT[scene["shape"][i]] for i in range(num)
    ]  # fmt: skip
    if num == 1:
        scene["centers"][0] = _uniform_center(rng, extents[0])
        return scene
    vertical = rng.random() < 0.5
    axis = 1 if vertical else 0
    for _ in range(_MAX_TRIES):  # rejection sampling (two large objects need ~100 tries)
        a, b = _uniform_center(rng, extents[0]), _uniform_center(rng, extents[1])
        along, across = abs(a[axis] - b[axis]), abs(a[1 - axis] - b[1 - axis])
        if along >= extents[0] + extents[1] + MIN_GAP and across <= MAX_CROSS_RATIO * along:
            break
    else:
        raise RuntimeError(f"cannot place objects of extents {extents}; radii too large?")
    if a[axis] > b[axis]:  # object 0 is the left / upper one
        a, b = b, a
        for key in ("color", "shape", "size"):
            scene[key] = scene[key][::-1].copy()
    scene["centers"][0], scene["centers"][1] = a, b
    scene["relation"] = RELATIONS.index("above" if vertical else "left of")
    return scene


def _uniform_center(rng: np.random.Generator, extent: float) -> np.ndarray:
    low, high = extent + 0.5, IMAGE_SIZE - extent - 0.5
    return rng.uniform(low, high, size=2)


def shape_mask(shape: int, radius: float, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Boolean mask of points (dx, dy) (offsets from the centre, y down) inside a shape."""
    name = SHAPES[shape]
    if name == "circle":
        return dx**2 + dy**2 <= radius**2
    if name == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * radius
    if name == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * radius
    if name == "triangle":  # pointing up, centroid at the centre, circumradius 1.15 r
        r = 1.15 * radius
        return (dy <= r / 2) & (dy >= -r + np.sqrt(3.0) * np.abs(dx))
    if name == "cross":
        arm = 0.33 * radius
        inside = (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
        return inside & ((np.abs(dx) <= arm) | (np.abs(dy) <= arm))
    raise ValueError(f"unknown shape index {shape}")


def _coverage(shape: int, radius: float, center: np.ndarray) -> np.ndarray:
    """(32, 32) fraction of each pixel covered by the shape (anti-aliasing)."""
    n = IMAGE_SIZE * _SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / _SUPERSAMPLE
    dx = coords[None, :] - center[0]
    dy = coords[:, None] - center[1]
    mask = shape_mask(shape, radius, dx, dy).astype(np.float64)
    return mask.reshape(IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE).mean(axis=(1, 3))


def draw_background(rng: np.random.Generator) -> np.ndarray:
    """(32, 32, 3) float in [0, 255]: a dim, low-saturation gradient with a faint texture."""
    level = rng.uniform(25.0, 125.0)
    start = level + rng.normal(0.0, 10.0, size=3)
    end = start + rng.uniform(-35.0, 35.0) + rng.normal(0.0, 8.0, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1)
    t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) / np.sqrt(2) + 0.5
    image = start * (1 - t[..., None]) + end * t[..., None]
    kind = rng.integers(4)
    amplitude = rng.uniform(3.0, 10.0)
    if kind == 0:  # pixel noise
        texture = rng.normal(0.0, 1.0, size=(IMAGE_SIZE, IMAGE_SIZE))
    elif kind == 1:  # stripes
        period, phase, theta = rng.uniform(3, 8), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
        u = np.cos(theta) * xx + np.sin(theta) * yy
        texture = np.sin(2 * np.pi * u * (IMAGE_SIZE - 1) / period + phase)
    elif kind == 2:  # checks
        cell = int(rng.integers(2, 5))
        iy, ix = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] // cell
        texture = np.where((iy + ix) % 2 == 0, 1.0, -1.0)
    else:  # smooth blotches: 5x5 noise, bilinearly upsampled
        coarse = rng.normal(0.0, 1.0, size=(5, 5))
        upsample = _linear_upsampling(5, IMAGE_SIZE)
        texture = upsample @ coarse @ upsample.T
    image = image + amplitude * texture[..., None]
    return np.clip(image, 0.0, 140.0)


def _linear_upsampling(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of linear interpolation weights from n_in to n_out points."""
    positions = np.linspace(0, n_in - 1, n_out)
    return np.stack([np.interp(positions, np.arange(n_in), row) for row in np.eye(n_in)], 1)


def draw_scene(rng: np.random.Generator, scene: dict) -> np.ndarray:
    """(32, 32, 3) uint8 picture of `scene` (from `sample_scene`) on a random background."""
    image = draw_background(rng)
    for i in range(int(scene["num_objects"])):
        alpha = _coverage(int(scene["shape"][i]), RADIUS[scene["size"][i]], scene["centers"][i])
        color = COLOR_RGB[scene["color"][i]] + rng.uniform(-COLOR_JITTER, COLOR_JITTER, 3)
        image = image * (1 - alpha[..., None]) + np.clip(color, 0, 255) * alpha[..., None]
    return np.round(np.clip(image, 0, 255)).astype(np.uint8)


def render_scene(rng: np.random.Generator, *, two_object_prob: float = 0.5) -> tuple:
    """Samples and draws one scene: ((32, 32, 3) uint8 image, scene dict from sample_scene)."""
    scene = sample_scene(rng, two_object_prob=two_object_prob)
    return draw_scene(rng, scene), scene


def make_shapes_example(rng: np.random.Generator, *, two_object_prob: float = 0.5) -> dict:
    """One example dict with the builder's features."""
    image, scene = render_scene(rng, two_object_prob=two_object_prob)
    return {
        "image": image,
        "text": caption_scene(rng, scene),
        "num_objects": np.int32(scene["num_objects"]),
        "color": scene["color"].astype(np.int32),
        "shape": scene["shape"].astype(np.int32),
        "size": scene["size"].astype(np.int32),
        "relation": np.int32(scene["relation"]),
        "label": int(scene["shape"][0]),
    }


class CrossjaxShapes(tfds.core.GeneratorBasedBuilder):
    """Rendered one- or two-object scenes (32x32 RGB) with attribute captions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ShapesConfig(name="default", description="20000 train / 2000 test scenes."),
        ShapesConfig(
            name="tiny", description="512 / 128 scenes: for tests.", num_train=512, num_test=128
        ),  # fmt: skip
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        pair = tfds.features.Tensor(shape=(2,), dtype=np.int32)
        scalar = tfds.features.Tensor(shape=(), dtype=np.int32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8
                    ),
                    "text": tfds.features.Text(),
                    "num_objects": scalar,
                    "color": pair,
                    "shape": pair,
                    "size": pair,
                    "relation": scalar,
                    "label": tfds.features.ClassLabel(names=list(SHAPES)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # everything is generated locally
        cfg = self.builder_config
        sizes = {"train": cfg.num_train, "test": cfg.num_test}
        return {name: self._generate_examples(name, n) for name, n in sizes.items()}

    def _generate_examples(self, split: str, num_examples: int):
        cfg = self.builder_config
        for index in range(num_examples):
            rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], index])
            yield index, make_shapes_example(rng, two_object_prob=cfg.two_object_prob)
