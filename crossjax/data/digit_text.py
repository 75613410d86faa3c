"""Noisy English descriptions of a digit, for the text modality of `crossjax_digits`.

`describe_digit(rng, label)` draws one description: most name the digit through varied
templates and synonyms ("a handwritten seven", "the digit 7", "number seven written by
hand"), some carry only partial information ("an odd number", "a digit above five",
"either a three or a seven"), a few carry none ("a scribble on paper"); then typos,
dropped words and distracting words are added. Output: lowercase words separated by single
spaces, no punctuation, at most `MAX_WORDS` words.
"""

from __future__ import annotations

import numpy as np

from crossjax.data.text_noise import add_word_noise

MAX_WORDS = 16
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Probabilities of the three kinds of description (full information is the remainder).
PARTIAL_PROB = 0.10
NO_INFO_PROB = 0.04
NUMERAL_PROB = 0.3  # "7" instead of "seven"
TYPO_PROB = 0.08
DROP_PROB = 0.05
DISTRACTOR_PROB = 0.35

_HAND = ("handwritten", "hand written", "scribbled", "drawn", "sketched", "penned")
_NOUN = ("digit", "number", "numeral", "figure")
_FULL_TEMPLATES = (
    "a {hand} {w}",
    "the {noun} {w}",
    "this is the {noun} {w}",
    "{noun} {w} written by hand",
    "a {w}",
    "it is a {w}",
    "someone wrote a {w}",
    "a {hand} {noun} {w}",
    "i think this is a {w}",
    "an image of the {noun} {w}",
    "{w}",
    "looks like a {w} to me",
    "a {w} {hand} on paper",
    "the {noun} shown here is {w}",
    "a picture of a {hand} {w}",
)
_NO_INFO = (
    "a {hand} {noun}",
    "some {noun} written by hand",
    "a {noun}",
    "a scribble on paper",
    "hard to read this {noun}",
    "a {noun} on a small card",
)
_DISTRACTORS = (
    "quite", "clearly", "messy", "small", "blurry", "ink", "pen", "paper", "maybe",
    "probably", "dark", "faint", "neat", "old", "scan", "photo", "grey", "tilted", "thin",
    "thick", "bold", "really",
)  # fmt: skip
_MEANINGFUL = frozenset((*NUMBER_WORDS, *(str(d) for d in range(10)), "odd", "even", "prime"))
_PRIMES = (2, 3, 5, 7)
# Words whose loss would make a partial statement false ("not a three" -> "a three").
_PROTECTED = frozenset(
    ("not", "either", "or", "above", "below", "under", "bigger", "smaller", "greater", "less",
     "more", "than")
)  # fmt: skip


def _number(rng: np.random.Generator, digit: int) -> str:
    return str(digit) if rng.random() < NUMERAL_PROB else NUMBER_WORDS[digit]


def _fill(rng: np.random.Generator, template: str, word: str = "") -> list[str]:
    text = template.format(
        w=word,
        hand=_HAND[rng.integers(len(_HAND))],
        noun=_NOUN[rng.integers(len(_NOUN))],
    )
    return _fix_articles(text.split())


def _fix_articles(words: list[str]) -> list[str]:
    """Uses "an" before a word read with a leading vowel ("an eight", "an 8", not "an one")."""
    out = list(words)
    for i in range(len(out) - 1):
        if out[i] in ("a", "an"):
            nxt = out[i + 1]
            out[i] = "an" if nxt[0] in "aeiou8" and nxt != "one" else "a"
    return out


def _partial(rng: np.random.Generator, label: int) -> list[str]:
    """A true statement that leaves several digits possible."""
    noun = ("digit", "number")[rng.integers(2)]
    choices = ["parity", "prime", "either", "not"]
    if label < 9:
        choices.append("below")
    if label > 0:
        choices.append("above")
    kind = choices[rng.integers(len(choices))]
    if kind == "parity":
        return _fix_articles(["a", "odd" if label % 2 else "even", noun])
    if kind == "prime":
        return ["a", "prime", noun] if label in _PRIMES else ["not", "a", "prime", noun]
    if kind == "either":
        other = int(rng.choice([d for d in range(10) if d != label]))
        first, second = (label, other) if rng.random() < 0.5 else (other, label)
        return _fix_articles(["either", "a", _number(rng, first), "or", "a", _number(rng, second)])
    if kind == "not":
        other = int(rng.choice([d for d in range(10) if d != label]))
        return _fix_articles(["not", "a", _number(rng, other)])
    if kind == "above":
        bound = int(rng.integers(0, label))
        word = ("above", "bigger than", "greater than", "more than")[rng.integers(4)]
        return ["a", noun, *word.split(), _number(rng, bound)]
    bound = int(rng.integers(label + 1, 10))
    word = ("below", "smaller than", "less than", "under")[rng.integers(4)]
    return ["a", noun, *word.split(), _number(rng, bound)]


def describe_digit(rng: np.random.Generator, label: int, *, noisy: bool = True) -> str:
    """One description of digit `label` (0..9) as a lowercase space-separated string.

    noisy=False always names the digit with a clean template (no partial or missing
    information, no typos, drops or distractors): the helper tests use to check intent.
    """
    kind = rng.random() if noisy else 1.0
    if kind < NO_INFO_PROB:
        words = _fill(rng, _NO_INFO[rng.integers(len(_NO_INFO))])
    elif kind < NO_INFO_PROB + PARTIAL_PROB:
        words = _partial(rng, label)
    else:
        template = _FULL_TEMPLATES[rng.integers(len(_FULL_TEMPLATES))]
        words = _fill(rng, template, _number(rng, label))
    if noisy:
        words = add_word_noise(
            rng,
            words,
            typo_prob=TYPO_PROB,
            drop_prob=DROP_PROB,
            distractor_prob=DISTRACTOR_PROB,
            distractors=_DISTRACTORS,
            max_words=MAX_WORDS,
            protected=_PROTECTED,
            meaningful=_MEANINGFUL,
        )
    return " ".join(words[:MAX_WORDS])
