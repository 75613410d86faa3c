"""Word-level tokenisation and a vocabulary built from the training split.

Ids: 0 = padding, 1 = unknown word, 2.. = words ordered by frequency (ties by spelling),
so the vocabulary is a deterministic function of the training texts.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Iterable

import numpy as np

from crossjax.errors import CrossjaxError

PAD_ID = 0
UNK_ID = 1
_SPECIAL = ("<pad>", "<unk>")
_WORD = re.compile(r"[a-z0-9']+")


def tokenize(text: str | bytes) -> list[str]:
    """Lower-cased words of `text` (bytes are decoded as UTF-8)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return _WORD.findall(text.lower())


class Vocabulary:
    """Maps words to ids and back; `encode` pads/truncates to a fixed length (a
    crossjax.data.tokenizers.TextTokenizer)."""

    pad_id = PAD_ID
    unk_id = UNK_ID
    special_ids = frozenset({PAD_ID})

    def __init__(self, words: list[str]):
        self.words = list(_SPECIAL) + [w for w in words if w not in _SPECIAL]
        self._ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(
        cls, texts: Iterable[str | bytes], *, min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Vocabulary of words seen at least `min_count` times, at most `max_size` ids."""
        counts = collections.Counter(w for t in texts for w in tokenize(t))
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(_SPECIAL))]
        return cls(ranked)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (max_len,) int32 and mask (max_len,) bool; long texts are truncated."""
        ids = [self._ids.get(w, UNK_ID) for w in tokenize(text)][:max_len]
        out = np.zeros((max_len,), np.int32)
        out[: len(ids)] = ids
        mask = np.zeros((max_len,), bool)
        mask[: len(ids)] = True
        return out, mask

    def decode(self, ids: Iterable[int]) -> str:
        """Words of `ids`, stopping at the first padding id."""
        words = []
        for i in ids:
            if int(i) == PAD_ID:
                break
            words.append(self.words[int(i)] if 0 <= int(i) < len(self.words) else "<unk>")
        return " ".join(words)

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"words": self.words}, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        try:
            with open(path) as f:
                words = json.load(f)["words"]
        except (OSError, ValueError, KeyError) as e:
            raise CrossjaxError(f"cannot read vocabulary {path} ({e}); delete it to rebuild") from e
        return cls(words[len(_SPECIAL) :])
