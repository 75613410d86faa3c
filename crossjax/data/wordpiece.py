"""BERT's WordPiece tokenizer (transformers' BertTokenizer), pure Python, read from the
checkpoint's vocab.txt (one token per line, the line number is its id).

Basic tokenisation: control characters dropped, whitespace normalised, spaces put around
CJK ideographs, NFC, split on whitespace, optionally lower-cased with accents stripped,
split on punctuation. Then greedy longest-match-first WordPiece with "##" continuations;
a word with no split (or over 100 characters) is [UNK]. Special tokens written in the
text ([CLS], [SEP], [PAD], [UNK], [MASK]) stay single tokens.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import numpy as np
import regex

from crossjax.data.bpe import padded, read_text_file
from crossjax.errors import ConfigError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100
# ASCII text takes a shortcut with the same result: its control characters (all but tab,
# newline, return) are dropped, it has no CJK, accents or NFC changes, and every
# printable non-alphanumeric character is punctuation.
_ASCII_CONTROL = {c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]}
_ASCII_WORDS = regex.compile(r"[0-9A-Za-z]+|[!-/:-@\[-`{-~]")


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    """ASCII non-alphanumerics (such as ^ $ `) count as punctuation, as in BERT."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def _is_cjk(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _split_on_punctuation(token: str) -> list[str]:
    pieces: list[str] = []
    start_new = True
    for char in token:
        if _is_punctuation(char):
            pieces.append(char)
            start_new = True
        else:
            if start_new:
                pieces.append("")
            start_new = False
            pieces[-1] += char
    return pieces


class WordPiece:
    """BERT's tokenizer: `encode` gives [CLS] pieces [SEP], cut to max_len (keeping
    [SEP] last) and padded with [PAD]; mask (max_len,) bool is True up to [SEP].

    lowercase: lower-case (and strip accents) before splitting, as the uncased BERTs;
    strip_accents: None follows `lowercase`, as in transformers.
    """

    def __init__(
        self, vocab_path: str, *, lowercase: bool = True, strip_accents: bool | None = None
    ):
        field = "data.tokenizer.vocab"
        text = read_text_file(vocab_path, field, "the checkpoint's vocab.txt")
        self.vocab: dict[str, int] = {}
        for i, token in enumerate(text.split("\n")[: text.count("\n") + (not text.endswith("\n"))]):
            self.vocab[token.rstrip("\r")] = i
        missing = [t for t in SPECIAL_TOKENS[:4] if t not in self.vocab]
        if missing:
            raise ConfigError(
                f"{field}={vocab_path!r} lacks {', '.join(missing)}; point it at a BERT "
                "vocab.txt (one token per line, with [PAD] [UNK] [CLS] [SEP])"
            )
        self.tokens = {i: t for t, i in self.vocab.items()}
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        present = [t for t in SPECIAL_TOKENS if t in self.vocab]
        self.special_ids = frozenset(self.vocab[t] for t in present if t != "[UNK]")
        self.specials = regex.compile("(" + "|".join(regex.escape(t) for t in present) + ")")
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self._size = max(self.vocab.values()) + 1
        self._pieces: dict[str, list[int]] = {}  # word -> ids: captions repeat their words

    def __len__(self) -> int:
        return self._size

    def basic_tokens(self, text: str) -> list[str]:
        """Words and punctuation marks of `text` (BERT's BasicTokenizer)."""
        if text.isascii():
            text = text.translate(_ASCII_CONTROL)
            return _ASCII_WORDS.findall(text.lower() if self.lowercase else text)
        chars = []
        for char in text:
            if char in "\x00\ufffd" or _is_control(char):
                continue
            if _is_whitespace(char):
                chars.append(" ")
            elif _is_cjk(char):
                chars.append(f" {char} ")
            else:
                chars.append(char)
        words = []
        for token in unicodedata.normalize("NFC", "".join(chars)).split():
            if self.lowercase:
                token = token.lower()
            if self.strip_accents:
                token = _strip_accents(token)
            words.extend(_split_on_punctuation(token))
        return " ".join(words).split()

    def word_pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first pieces of one word; [UNK] when it has none."""
        if word not in self._pieces:
            self._pieces[word] = self._split_word(word)
        return self._pieces[word]

    def _split_word(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return ids

    def tokenize_ids(self, text: str | bytes) -> list[int]:
        """The ids of `text` without [CLS]/[SEP]."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        ids: list[int] = []
        for i, part in enumerate(self.specials.split(text)):
            if i % 2:  # a special token written in the text
                ids.append(self.vocab[part])
                continue
            for word in self.basic_tokens(part):
                ids.extend(self.word_pieces(word))
        return ids

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """ids (max_len,) int32 = [CLS] pieces [SEP] [PAD]..., mask (max_len,) bool."""
        if max_len < 2:
            raise ConfigError(
                f"data.max_text_len={max_len} leaves no room for [CLS] and [SEP]; set it to "
                "2 or more (at most the checkpoint's max_positions, 512 for BERT)"
            )
        ids = [self.cls_id, *self.tokenize_ids(text)[: max_len - 2], self.sep_id]
        return padded(ids, max_len, self.pad_id)

    def decode(self, ids: Iterable[int]) -> str:
        """The words of `ids` ("##" pieces joined), special tokens left out."""
        tokens = [self.tokens.get(int(i), "[UNK]") for i in ids if int(i) not in self.special_ids]
        return " ".join(tokens).replace(" ##", "").strip()
