"""Word-level noise for synthetic descriptions: typos, dropped words, distracting words.

All functions are pure given the numpy `Generator` they receive, work on lists of lowercase
words, and never return an empty list (a description always keeps at least one word).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def typo(rng: np.random.Generator, word: str) -> str:
    """Returns `word` with one character edit: swap of neighbours, drop, double or replace.

    Words shorter than 3 characters are returned unchanged (a typo would erase them).
    """
    if len(word) < 3:
        return word
    kind = rng.integers(4)
    i = int(rng.integers(len(word) - 1))
    if kind == 0:  # swap two neighbouring characters
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # drop a character
        return word[:i] + word[i + 1 :]
    if kind == 2:  # double a character
        return word[: i + 1] + word[i] + word[i + 1 :]
    return word[:i] + _LETTERS[rng.integers(len(_LETTERS))] + word[i + 1 :]


def add_word_noise(
    rng: np.random.Generator,
    words: Sequence[str],
    *,
    typo_prob: float,
    drop_prob: float,
    distractor_prob: float,
    distractors: Sequence[str],
    max_words: int,
    protected: Collection[str] = (),
    meaningful: Collection[str] = (),
) -> list[str]:
    """Applies per-word typos and drops, then maybe inserts one distracting word.

    words: the clean description, a list of lowercase words.
    typo_prob / drop_prob: per-word probabilities of a typo / of removing the word.
    distractor_prob: probability of inserting one word from `distractors` at a random place.
    max_words: the result is truncated to this many words.
    protected: words never dropped or misspelt, e.g. "not", whose loss would turn a true
      statement into a false one.
    meaningful: words a typo must not produce ("seven" -> "even" would change the meaning);
      such a typo is skipped.
    """
    noisy = []
    for word in words:
        if word in protected:
            noisy.append(word)
            continue
        if rng.random() < drop_prob:
            continue
        if rng.random() < typo_prob:
            misspelt = typo(rng, word)
            word = word if misspelt in meaningful else misspelt
        noisy.append(word)
    if not noisy:  # keep at least one word so the text is never empty
        noisy = [words[int(rng.integers(len(words)))]]
    if rng.random() < distractor_prob:
        position = int(rng.integers(len(noisy) + 1))
        noisy.insert(position, distractors[int(rng.integers(len(distractors)))])
    return noisy[:max_words]
