"""Byte-level BPE tokenizers: GPT-2's (vocab.json + merges.txt) and CLIP's (open_clip's
SimpleTokenizer, bpe_simple_vocab_16e6.txt.gz), pure Python, no network.

Both map every UTF-8 byte of a pre-token to a printable character (`bytes_to_unicode`)
and merge adjacent symbols by rank, lowest first, as the reference implementations do.
Encoding returns ids (L,) int32 and mask (L,) bool like `Vocabulary.encode`.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import os
from collections.abc import Iterable

import numpy as np
import regex

from crossjax.errors import ConfigError

# GPT-2's pre-tokenisation (openai/gpt-2 encoder.py): contractions, letters, digits and
# other runs, each with one leading space; whitespace runs leave their last space to the
# next word.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_END_OF_TEXT = "<|endoftext|>"
CLIP_START, CLIP_END = "<start_of_text>", "<end_of_text>"
CLIP_MAX_MERGES = 49152 - 256 - 2  # open_clip keeps merges lines 1..48894 of the file


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character: printable Latin-1 bytes map to themselves, the others
    to chr(256 + n), so no byte becomes whitespace or a control character. The order
    (printable bytes first) is CLIP's order of its first 256 ids."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in keep}
    others = [b for b in range(256) if b not in chars]
    chars.update({b: chr(256 + n) for n, b in enumerate(others)})
    return chars


def merge_symbols(word: tuple[str, ...], ranks: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """`word` with the lowest-ranked adjacent pair merged everywhere, repeatedly, until no
    adjacent pair has a rank (the reference BPE loop)."""
    while len(word) > 1:
        pairs = set(zip(word[:-1], word[1:], strict=True))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        first, second = best
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = tuple(merged)
    return word


def _as_text(text: str | bytes) -> str:
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text


def padded(ids: list[int], max_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """ids (at most max_len) -> ids (max_len,) int32 padded with `pad_id`, mask (max_len,)
    bool True on the real tokens."""
    out = np.full((max_len,), pad_id, np.int32)
    out[: len(ids)] = ids
    mask = np.zeros((max_len,), bool)
    mask[: len(ids)] = True
    return out, mask


def read_text_file(path: str | os.PathLike, field: str, what: str) -> str:
    """The UTF-8 text of `path` (gunzipped when it is gzip), or a ConfigError naming
    `field` and what it should hold."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{field}={str(path)!r} cannot be read ({type(e).__name__}); point it at {what}"
        ) from None


def read_merges(text: str, field: str, path: str) -> list[tuple[str, str]]:
    """Merge pairs of a merges file: lines after "#version" headers, blanks skipped."""
    merges = []
    for line in text.split("\n"):
        if not line.strip() or line.startswith("#version"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(
                f"{field}={path!r} has the line {line[:40]!r}, not a merge 'a b'; point it "
                "at the merges file that ships with the checkpoint"
            )
        merges.append((parts[0], parts[1]))
    return merges


class GPT2BPE:
    """GPT-2's byte-level BPE, as transformers' GPT2Tokenizer with its defaults (no prefix
    space, no special tokens added). `<|endoftext|>` in the text is that one token.

    Padding: texts are padded with the `<|endoftext|>` id (0 if the vocabulary lacks it)
    and the mask is False there, so the gpt2 tower (which pools the last token of the
    mask) reads the last text token; nothing is appended. Long texts are cut to max_len.
    """

    unk_id = None  # every byte is a token

    def __init__(self, vocab_path: str, merges_path: str, *, lowercase: bool = False):
        field = "data.tokenizer.vocab"
        try:
            self.encoder = json.loads(read_text_file(vocab_path, field, "GPT-2's vocab.json"))
            ok = isinstance(self.encoder, dict) and all(
                isinstance(i, int) for i in self.encoder.values()
            )
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{field}={vocab_path!r} is not a JSON token -> id map; point it at GPT-2's "
                "vocab.json"
            )
        text = read_text_file(merges_path, "data.tokenizer.merges", "GPT-2's merges.txt")
        self.ranks = {
            m: r for r, m in enumerate(read_merges(text, "data.tokenizer.merges", merges_path))
        }
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.lowercase = lowercase
        self.eot_id = self.encoder.get(GPT2_END_OF_TEXT)
        self.pad_id = self.eot_id if self.eot_id is not None else 0
        self.special_ids = frozenset({self.eot_id} - {None})
        # transformers splits the text on special tokens before pre-tokenising
        self.specials = regex.compile(f"({regex.escape(GPT2_END_OF_TEXT)})")
        self.pretokens = regex.compile(GPT2_PATTERN)
        self._size = max(self.encoder.values(), default=-1) + 1
        self._cache: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return self._size

    def _bpe_ids(self, token: str) -> list[int]:
        if token not in self._cache:
            symbols = merge_symbols(tuple(token), self.ranks)
            fallback = self.pad_id  # a symbol missing from vocab.json: GPT-2's unk token
            self._cache[token] = [self.encoder.get(s, fallback) for s in symbols]
        return self._cache[token]

    def tokenize_ids(self, text: str | bytes) -> list[int]:
        """All ids of `text`, no special tokens added."""
        text = _as_text(text)
        if self.lowercase:
            text = text.lower()
        ids: list[int] = []
        parts = self.specials.split(text) if self.eot_id is not None else [text]
        for i, part in enumerate(parts):
            if i % 2:  # a captured <|endoftext|>
                ids.append(self.eot_id)
                continue
            for token in self.pretokens.findall(part):
                mapped = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
                ids.extend(self._bpe_ids(mapped))
        return ids

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """ids (max_len,) int32 padded with <|endoftext|>, mask (max_len,) bool."""
        return padded(self.tokenize_ids(text)[:max_len], max_len, self.pad_id)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`, special tokens left out."""
        chars = "".join(self.decoder.get(int(i), "") for i in ids if int(i) not in self.special_ids)
        data = bytes(self.byte_decoder[c] for c in chars if c in self.byte_decoder)
        return data.decode("utf-8", errors="replace")


def _clip_clean(text: str, lowercase: bool) -> str:
    """open_clip's clean "lower": ftfy, HTML entities unescaped twice, whitespace runs
    collapsed to one space, lower-cased ("whitespace" without the last step)."""
    import ftfy  # local: only CLIP's tokenizer needs it

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if lowercase else text


class CLIPBPE:
    """open_clip's SimpleTokenizer: <start_of_text> ids <end_of_text>, padded with 0;
    longer texts are cut to max_len with <end_of_text> kept last (as open_clip.tokenize),
    so the CLIP tower's argmax finds it.

    `merges_path`: bpe_simple_vocab_16e6.txt(.gz) or a file of the same layout (a header
    line, then merges with "</w>" word ends). Ids: 256 byte symbols, the same with "</w>",
    one per merge, then the two special tokens. `vocab_size` keeps that many ids (the
    first vocab_size - 514 merges); None keeps open_clip's default, at most 48,894 merges.
    """

    pad_id = 0
    unk_id = None

    def __init__(self, merges_path: str, *, vocab_size: int | None = None, lowercase: bool = True):
        field = "data.tokenizer.merges"
        text = read_text_file(merges_path, field, "open_clip's bpe_simple_vocab_16e6.txt.gz")
        merges = read_merges(text.split("\n", 1)[1] if "\n" in text else "", field, merges_path)
        if vocab_size is not None:
            wanted = vocab_size - 512 - 2
            if wanted < 0 or wanted > len(merges):
                raise ConfigError(
                    f"data.tokenizer.vocab_size={vocab_size} needs {wanted} merges but "
                    f"{merges_path} has {len(merges)}; valid: 514..{len(merges) + 514}"
                )
            merges = merges[:wanted]
        else:
            merges = merges[:CLIP_MAX_MERGES]
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [CLIP_START, CLIP_END]
        self.encoder = dict(zip(vocab, range(len(vocab)), strict=True))
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.sot_id, self.eot_id = self.encoder[CLIP_START], self.encoder[CLIP_END]
        self.special_ids = frozenset({self.sot_id, self.eot_id})
        self.lowercase = lowercase
        self.pretokens = regex.compile(
            rf"{CLIP_START}|{CLIP_END}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
            regex.IGNORECASE,
        )
        self._size = len(vocab)
        self._cache: dict[str, list[int]] = {
            CLIP_START: [self.sot_id],
            CLIP_END: [self.eot_id],
        }

    def __len__(self) -> int:
        return self._size

    def _bpe_ids(self, token: str) -> list[int]:
        if token not in self._cache:
            word = (*token[:-1], token[-1] + "</w>")
            self._cache[token] = [self.encoder[s] for s in merge_symbols(word, self.ranks)]
        return self._cache[token]

    def tokenize_ids(self, text: str | bytes) -> list[int]:
        """The ids of `text` without <start_of_text>/<end_of_text> (SimpleTokenizer.encode)."""
        ids: list[int] = []
        for token in self.pretokens.findall(_clip_clean(_as_text(text), self.lowercase)):
            mapped = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self._bpe_ids(mapped))
        return ids

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """ids (max_len,) int32 padded with 0, mask (max_len,) bool; max_len >= 2."""
        if max_len < 2:
            raise ConfigError(
                f"data.max_text_len={max_len} leaves no room for CLIP's start and end "
                "tokens; set it to 2 or more (77 for CLIP's checkpoints)"
            )
        ids = [self.sot_id, *self.tokenize_ids(text), self.eot_id]
        if len(ids) > max_len:
            ids = ids[:max_len]
            ids[-1] = self.eot_id
        return padded(ids, max_len, self.pad_id)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids` (words separated by spaces), special tokens left out."""
        chars = "".join(self.decoder.get(int(i), "") for i in ids if int(i) not in self.special_ids)
        text = bytes(self.byte_decoder[c] for c in chars).decode("utf-8", errors="replace")
        return text.replace("</w>", " ").strip()
