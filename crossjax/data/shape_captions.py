"""Captions of `crossjax_shapes` scenes: attribute vocabulary, a small grammar, and its parser.

A scene has one or two objects, each with a colour, shape and size (indices into `COLORS`,
`SHAPES`, `SIZES`). Two-object scenes also have a relation, stored canonically as
"object0 REL object1" where object 0 is the left object (REL = "left of") or the upper one
(REL = "above"). A caption may state it either way round ("a big blue square to the right
of a tiny red circle"), with synonyms ("big"/"large", "under"/"below", "disc"/"circle")
and several word orders; `parse_caption` maps any of them back to the canonical attributes.
"""

from __future__ import annotations

import numpy as np

COLORS = ("red", "green", "blue", "yellow", "purple", "cyan", "white")
SHAPES = ("circle", "square", "triangle", "cross", "diamond")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE_RELATION = (1, 0, 3, 2)  # "a left of b" <=> "b right of a"; "a above b" <=> "b below a"

# Words the grammar uses for each attribute value (the first is the canonical name).
COLOR_WORDS = (("red",), ("green",), ("blue",), ("yellow",), ("purple", "violet"),
               ("cyan", "turquoise"), ("white",))  # fmt: skip
SHAPE_WORDS = (("circle", "disc", "disk"), ("square", "box"), ("triangle",),
               ("cross", "plus"), ("diamond", "rhombus"))  # fmt: skip
SIZE_WORDS = (("small", "tiny", "little"), ("large", "big"))
RELATION_PHRASES = (
    ("left of", "to the left of", "on the left of"),
    ("right of", "to the right of", "on the right of"),
    ("above", "on top of", "over"),
    ("below", "under", "beneath", "underneath"),
)
# One keyword identifies each relation phrase.
_RELATION_KEYWORDS = {"left": 0, "right": 1, "above": 2, "top": 2, "over": 2, "below": 3,
                      "under": 3, "beneath": 3, "underneath": 3}  # fmt: skip

_SINGLE_TEMPLATES = ("{a}", "there is {a}", "a picture of {a}", "{a} on its own",
                     "only {a}", "{a} in the picture", "we see {a}", "just {a}")  # fmt: skip
# {s}: the object the relation is stated for, {o}: the other one, {r}: the relation phrase.
_PAIR_TEMPLATES = (
    "{s} {r} {o}",
    "there is {s} {r} {o}",
    "{s} is {r} {o}",
    "{s} sits {r} {o}",
    "{r} {o} there is {s}",  # fronted relation: the subject comes second
    "{r} {o} is {s}",
    "{o} with {s} {r} it",  # "... with X to the left of it": the subject comes second
)


def _lookup(words: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    return {word: index for index, synonyms in enumerate(words) for word in synonyms}


_COLOR_INDEX = _lookup(COLOR_WORDS)
_SHAPE_INDEX = _lookup(SHAPE_WORDS)
_SIZE_INDEX = _lookup(SIZE_WORDS)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _noun_phrase(rng: np.random.Generator, color: int, shape: int, size: int) -> str:
    determiner = "one" if rng.random() < 0.15 else "a"
    return " ".join(
        [
            determiner,
            _pick(rng, SIZE_WORDS[size]),
            _pick(rng, COLOR_WORDS[color]),
            _pick(rng, SHAPE_WORDS[shape]),
        ]
    )


def caption_scene(rng: np.random.Generator, scene: dict[str, np.ndarray]) -> str:
    """A random caption naming every attribute of `scene` (keys as in `empty_attributes`).

    Two-object scenes are stated as "object0 REL object1" or, half the time, as
    "object1 INVERSE(REL) object0"; both are true of the picture.
    """
    color, shape, size = scene["color"], scene["shape"], scene["size"]
    objects = [
        _noun_phrase(rng, int(color[i]), int(shape[i]), int(size[i]))
        for i in range(int(scene["num_objects"]))
    ]
    if len(objects) == 1:
        return _pick(rng, _SINGLE_TEMPLATES).format(a=objects[0])
    relation = int(scene["relation"])
    subject, other = objects
    if rng.random() < 0.5:
        subject, other, relation = other, subject, INVERSE_RELATION[relation]
    template = _pick(rng, _PAIR_TEMPLATES)
    phrase = _pick(rng, RELATION_PHRASES[relation])
    return template.format(s=subject, o=other, r=phrase)


def empty_attributes() -> dict[str, np.ndarray | int]:
    """Attributes of an empty scene: every index -1 (the layout of dataset records)."""
    return {
        "num_objects": 0,
        "color": np.full(2, -1, np.int32),
        "shape": np.full(2, -1, np.int32),
        "size": np.full(2, -1, np.int32),
        "relation": -1,
    }


def parse_caption(caption: str | bytes) -> dict[str, np.ndarray | int]:
    """Canonical attributes a caption states; -1 for whatever it does not state.

    Returns {"num_objects": int (0..2), "color"/"shape"/"size": (2,) int32, "relation": int}
    in the layout of the dataset records: object 0 is the left or upper object and relation
    is "left of" or "above" when the caption states a relation between two objects. An
    object is a shape word with the size and colour words just before it; extra objects
    beyond two are ignored.
    """
    if isinstance(caption, bytes):
        caption = caption.decode()
    tokens = caption.lower().split()
    objects: list[dict[str, int]] = []  # each: color, shape, size, position
    pending = {"color": -1, "size": -1}
    relation, relation_pos = -1, -1
    for pos, token in enumerate(tokens):
        if token in _SIZE_INDEX:
            pending["size"] = _SIZE_INDEX[token]
        elif token in _COLOR_INDEX:
            pending["color"] = _COLOR_INDEX[token]
        elif token in _SHAPE_INDEX:
            objects.append({**pending, "shape": _SHAPE_INDEX[token], "position": pos})
            pending = {"color": -1, "size": -1}
        elif token in _RELATION_KEYWORDS and relation < 0:
            relation, relation_pos = _RELATION_KEYWORDS[token], pos
            pending = {"color": -1, "size": -1}

    out = empty_attributes()
    objects = objects[:2]
    out["num_objects"] = len(objects)
    if len(objects) == 2 and relation >= 0:
        # Fronted ("left of X is Y") and "X with Y left of it" state the relation for the
        # second object mentioned.
        second_is_subject = relation_pos < objects[0]["position"] or (
            tokens[-1] == "it" and relation_pos > objects[1]["position"]
        )
        subject, other = objects[::-1] if second_is_subject else objects
        if relation in (1, 3):  # canonical form uses "left of" / "above"
            subject, other, relation = other, subject, INVERSE_RELATION[relation]
        objects = [subject, other]
        out["relation"] = relation
    for i, obj in enumerate(objects):
        for key in ("color", "shape", "size"):
            out[key][i] = obj[key]
    return out
