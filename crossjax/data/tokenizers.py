"""The text tokenizers a run can use, chosen by `data.tokenizer`.

- kind "" (default): the word vocabulary built from the training split
  (crossjax.data.text.Vocabulary, saved as vocab.json with the run).
- "wordpiece": BERT's WordPiece from the checkpoint's vocab.txt (crossjax.data.wordpiece).
- "gpt2_bpe": GPT-2's byte-level BPE from vocab.json + merges.txt (crossjax.data.bpe).
- "clip_bpe": open_clip's BPE from bpe_simple_vocab_16e6.txt.gz (found inside an installed
  open_clip_torch when `merges` is unset) or a merges file of that layout.

SigLIP's SentencePiece tokenizer is not included. Every tokenizer follows `TextTokenizer`:
`encode(text, max_len)` -> ids (L,) int32 and mask (L,) bool, and `len()` is the vocabulary
size the text tower gets (DataSpec.vocab_size).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from crossjax.errors import ConfigError

KINDS = ("wordpiece", "gpt2_bpe", "clip_bpe")
_FIELDS = {
    "wordpiece": ("kind", "vocab", "lowercase", "strip_accents"),
    "gpt2_bpe": ("kind", "vocab", "merges", "lowercase"),
    "clip_bpe": ("kind", "merges", "vocab_size", "lowercase"),
}
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


class TextTokenizer(Protocol):
    """What the data pipeline and evaluators need from a tokenizer.

    pad_id: the id of padding positions; unk_id: the id of unknown text (None when every
    text has ids, as in byte-level BPE); special_ids: ids that are not text ([CLS], ...).
    """

    pad_id: int
    unk_id: int | None
    special_ids: frozenset[int]

    def __len__(self) -> int: ...

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def has_known_tokens(tokenizer: TextTokenizer, text: str, max_len: int) -> bool:
    """Whether `text` encodes to at least one id that is neither special nor unknown."""
    ids, mask = tokenizer.encode(text, max_len)
    unknown = {tokenizer.unk_id, *tokenizer.special_ids}
    return any(int(i) not in unknown for i in ids[mask])


def open_clip_bpe_file() -> str | None:
    """open_clip's bpe_simple_vocab_16e6.txt.gz in the installed open_clip_torch (found
    without importing it, so without torch), or None."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, CLIP_BPE_FILE)
        if os.path.isfile(path):
            return path
    return None


def _file(settings: Mapping[str, Any], key: str, kind: str, what: str) -> str:
    path = settings.get(key, "") or ""
    if not isinstance(path, str | os.PathLike) or not os.path.isfile(path):
        problem = " is unset" if not path else f"={str(path)!r} is not a file"
        raise ConfigError(f"data.tokenizer.{key}{problem}; {kind} needs the path of {what}")
    return os.fspath(path)


def _flag(settings: Mapping[str, Any], key: str, default: bool | None) -> bool | None:
    value = settings.get(key, None)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"data.tokenizer.{key}={value!r}; valid: True, False or None")
    return value


def tokenizer_kind(settings: Mapping[str, Any] | None) -> str:
    """`data.tokenizer.kind`: "" for the word vocabulary, else one of KINDS."""
    kind = (settings or {}).get("kind", "") or ""
    if kind and kind not in KINDS:
        raise ConfigError(
            f"data.tokenizer.kind={kind!r}; valid: {', '.join(KINDS)}, or '' for the word "
            "vocabulary built from the training split"
        )
    return kind


def load_tokenizer(settings: Mapping[str, Any] | None) -> TextTokenizer | None:
    """The tokenizer `data.tokenizer` describes, or None for the word vocabulary (kind "").

    settings: {"kind": ..., "vocab": path, "merges": path, "lowercase": bool | None,
    "strip_accents": bool | None, "vocab_size": int}; fields left at their defaults
    ("", None, 0) do not count. A wrong field, kind or file raises a one-line ConfigError.
    """
    settings = dict(settings or {})
    kind = tokenizer_kind(settings)
    if not kind:
        return None
    defaults = ("", None, 0)
    stray = sorted(k for k, v in settings.items() if k not in _FIELDS[kind] and v not in defaults)
    if stray:
        raise ConfigError(
            f"data.tokenizer.{stray[0]} is not a field of kind {kind!r}; valid: "
            f"{', '.join(_FIELDS[kind])}"
        )
    if kind == "wordpiece":
        from crossjax.data.wordpiece import WordPiece

        vocab = _file(settings, "vocab", kind, "the checkpoint's vocab.txt")
        return WordPiece(
            vocab,
            lowercase=_flag(settings, "lowercase", True),
            strip_accents=_flag(settings, "strip_accents", None),
        )
    from crossjax.data.bpe import CLIPBPE, GPT2BPE

    if kind == "gpt2_bpe":
        vocab = _file(settings, "vocab", kind, "the checkpoint's vocab.json")
        merges = _file(settings, "merges", kind, "the checkpoint's merges.txt")
        return GPT2BPE(vocab, merges, lowercase=_flag(settings, "lowercase", False))
    if not settings.get("merges"):
        settings["merges"] = open_clip_bpe_file() or ""
    what = f"open_clip's {CLIP_BPE_FILE} (pip install open_clip_torch finds it)"
    merges = _file(settings, "merges", kind, what)
    size = settings.get("vocab_size", 0) or None
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise ConfigError(f"data.tokenizer.vocab_size={size!r}; valid: an int, or 0 for all")
    return CLIPBPE(merges, vocab_size=size, lowercase=_flag(settings, "lowercase", True))
