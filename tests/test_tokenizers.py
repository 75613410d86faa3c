"""WordPiece, GPT-2 and CLIP tokenizers against their reference implementations (ids of
1,000 sentences recorded by tests/fixtures/make_tokenizers.py; no torch or transformers
here), their padding and truncation, their errors, and `data.tokenizer` in a run."""

from __future__ import annotations

import gzip
import json
import os
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import shapes_clip
from crossjax.config import validate_config
from crossjax.data import tokenizers as tokenizers_module
from crossjax.data.bpe import CLIPBPE, GPT2BPE
from crossjax.data.pipeline import DataPipeline
from crossjax.data.text import Vocabulary
from crossjax.data.tokenizers import has_known_tokens, load_tokenizer, open_clip_bpe_file
from crossjax.data.wordpiece import WordPiece
from crossjax.errors import ConfigError
from crossjax.evaluators import contrastive
from crossjax.models import build_model
from crossjax.models.pretrained import convert_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizers"
BERT = {"kind": "wordpiece", "vocab": str(FIXTURES / "bert_vocab.txt")}
GPT2 = {
    "kind": "gpt2_bpe",
    "vocab": str(FIXTURES / "gpt2_vocab.json"),
    "merges": str(FIXTURES / "gpt2_merges.txt"),
}
CLIP = {"kind": "clip_bpe", "merges": str(FIXTURES / "clip_merges.txt.gz")}


@pytest.fixture(scope="module")
def sentences():
    return json.loads((FIXTURES / "sentences.json").read_text())


@pytest.fixture(scope="module")
def reference():
    """Reference name -> list of id lists, one per sentence."""
    with np.load(FIXTURES / "reference.npz") as f:
        arrays = dict(f)
    names = {k.split("/")[0] for k in arrays}
    out = {}
    for name in names:
        ids, offsets = arrays[f"{name}/ids"], arrays[f"{name}/offsets"]
        out[name] = [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return out


def _encode_all(tokenizer, texts, max_len):
    """Real ids of each text encoded at `max_len` (mask applied)."""
    rows = []
    for text in texts:
        ids, mask = tokenizer.encode(text, max_len)
        assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (max_len,)
        assert not mask[np.argmin(mask) :].any() or mask.all()  # real tokens first
        rows.append(ids[mask].tolist())
    return rows


# -- fidelity -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, settings",
    [
        ("bert_uncased", BERT),
        ("bert_cased", {**BERT, "lowercase": False}),
        ("gpt2", GPT2),
        ("clip", CLIP),
        ("clip_cased", {**CLIP, "lowercase": False}),
    ],
)
def test_ids_equal_the_reference_tokenizer_on_1000_sentences(name, settings, sentences, reference):
    assert len(sentences) == 1000
    expected = reference[name]
    got = _encode_all(load_tokenizer(settings), sentences, 1024)
    mismatched = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    assert not mismatched, f"{len(mismatched)} differ, first: {sentences[mismatched[0]]!r}"


def test_the_sentences_cover_the_hard_cases(sentences, reference):
    text = "".join(sentences)
    for piece in ("&amp;", "don't", "\t", "\n", "  ", "中", "😀", "e\u0301", "Ã©", "<|endoftext|>"):
        assert piece in text, piece
    bert = WordPiece(BERT["vocab"])
    assert any(bert.unk_id in ids for ids in reference["bert_uncased"])
    assert any(len(w) > 100 for s in sentences for w in s.split())


def test_bert_truncation_keeps_sep_last(sentences, reference):
    bert = load_tokenizer(BERT)
    got = _encode_all(bert, sentences, 16)
    assert got == reference["bert_uncased_16"]
    ids, mask = bert.encode("", 6)
    assert ids.tolist() == [bert.cls_id, bert.sep_id, *[bert.pad_id] * 4]
    assert mask.tolist() == [True, True, False, False, False, False]


def test_clip_truncation_keeps_end_of_text_last(sentences, reference):
    clip = load_tokenizer(CLIP)
    padded = [clip.encode(s, 16)[0].tolist() for s in sentences]
    assert padded == reference["clip_16"]  # open_clip's __call__: padded with 0
    ids, mask = clip.encode("a photo of a cat " * 5, 16)
    assert mask.all() and ids[0] == clip.sot_id and ids[-1] == clip.eot_id
    assert int(np.argmax(ids)) == 15  # the CLIP tower pools at argmax: the end token


def test_gpt2_pads_with_end_of_text_outside_the_mask():
    gpt2 = load_tokenizer(GPT2)
    ids, mask = gpt2.encode("a photo of a cat", 12)
    n = int(mask.sum())
    assert 0 < n < 12 and not mask[n:].any()
    assert (ids[n:] == gpt2.eot_id).all() and gpt2.eot_id not in ids[:n].tolist()
    assert gpt2.decode(ids[mask]) == "a photo of a cat"
    cut, cut_mask = gpt2.encode("a photo of a cat", 2)
    assert cut_mask.all() and cut.tolist() == ids[:2].tolist()


def test_decode_inverts_encode_up_to_normalisation():
    assert load_tokenizer(BERT).decode(load_tokenizer(BERT).encode("The Café, naïve!", 16)[0]) == (
        "the cafe , naive !"
    )
    clip = load_tokenizer(CLIP)
    ids, mask = clip.encode("A photo of a dog &amp; a cat", 24)
    assert clip.decode(ids[mask]) == "a photo of a dog & a cat"


def test_known_token_check_sees_unknown_and_special_ids():
    bert, vocab = load_tokenizer(BERT), Vocabulary(["red"])
    assert has_known_tokens(bert, "dog", 8) and not has_known_tokens(bert, "ᚠ Ω", 8)
    assert has_known_tokens(vocab, "red", 4) and not has_known_tokens(vocab, "blue", 4)
    assert has_known_tokens(load_tokenizer(GPT2), "ᚠ", 8)  # byte-level: nothing is unknown


def test_clip_vocab_size_keeps_the_first_merges():
    full = load_tokenizer(CLIP)
    small = load_tokenizer({**CLIP, "vocab_size": 600})
    assert len(full) == 1474 and len(small) == 600
    assert (small.sot_id, small.eot_id) == (598, 599)
    ids, mask = small.encode("photo", 8)
    assert ids[mask].max() == small.eot_id


def test_clip_merges_default_to_the_file_inside_open_clip(tmp_path, monkeypatch):
    package = tmp_path / "open_clip"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('open_clip needs torch')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "open_clip", raising=False)
    assert open_clip_bpe_file() is None  # the package lacks the file
    (package / "bpe_simple_vocab_16e6.txt.gz").write_bytes(
        (FIXTURES / "clip_merges.txt.gz").read_bytes()
    )
    assert open_clip_bpe_file() == str(package / "bpe_simple_vocab_16e6.txt.gz")
    assert len(load_tokenizer({"kind": "clip_bpe"})) == 1474  # found without importing it


def test_clip_without_open_clip_asks_for_the_merges_file(monkeypatch):
    monkeypatch.setattr(tokenizers_module, "open_clip_bpe_file", lambda: None)
    with pytest.raises(ConfigError, match=r"merges is unset; clip_bpe needs the path of open_"):
        load_tokenizer({"kind": "clip_bpe"})


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, match",
    [
        ({"kind": "sentencepiece"}, r"data.tokenizer.kind='sentencepiece'; valid: wordpiece, "),
        ({"kind": "wordpiece"}, r"data.tokenizer.vocab is unset; wordpiece needs the path of"),
        ({**BERT, "vocab": "/no/vocab.txt"}, r"vocab='/no/vocab.txt' is not a file"),
        ({**BERT, "merges": "m.txt"}, r"data.tokenizer.merges is not a field of kind 'wordpiece'"),
        ({**GPT2, "merges": ""}, r"data.tokenizer.merges is unset; gpt2_bpe needs"),
        ({**CLIP, "vocab_size": 10**6}, r"vocab_size=1000000 needs 999486 merges but .* has 960"),
        ({**BERT, "lowercase": "yes"}, r"data.tokenizer.lowercase='yes'; valid: True, False"),
    ],
)
def test_bad_settings_are_one_line_errors(settings, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_tokenizer(settings)
    assert "\n" not in str(e.value)


def test_config_validation_rejects_an_unknown_kind():
    config = shapes_clip.get_config("tiny")
    validate_config(config)  # the default: the word vocabulary
    config.data.tokenizer.kind = "bpe"
    with pytest.raises(ConfigError, match=r"data.tokenizer.kind='bpe'; valid: wordpiece"):
        validate_config(config)


def test_wrong_files_are_one_line_errors(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n[UNK]\n")
    merges = tmp_path / "merges.txt"
    merges.write_text("#version: 0.2\na b c\n")
    json_vocab = tmp_path / "vocab.json"
    json_vocab.write_text('["not", "a", "map"]')
    binary = tmp_path / "clip.gz"
    binary.write_bytes(gzip.compress(b"\xff\xfe header\nx y"))
    cases = [
        (lambda: WordPiece(str(vocab)), r"lacks \[PAD\], \[CLS\], \[SEP\]; point it at a BERT"),
        (lambda: GPT2BPE(str(json_vocab), str(merges)), r"is not a JSON token -> id map"),
        (lambda: GPT2BPE(GPT2["vocab"], str(merges)), r"has the line 'a b c', not a merge"),
        (lambda: CLIPBPE(str(binary)), r"cannot be read \(UnicodeDecodeError\); point it at"),
        (lambda: load_tokenizer(BERT).encode("x", 1), r"max_text_len=1 leaves no room for"),
    ]
    for make, match in cases:
        with pytest.raises(ConfigError, match=match) as e:
            make()
        assert "\n" not in str(e.value)


def test_a_checkpoint_embedding_of_another_vocabulary_names_data_tokenizer():
    template = {"params": {"wte": {"embedding": np.zeros((1200, 4), np.float32)}}}
    with pytest.raises(ConfigError, match=r"vocab_size is its tokenizer's: set data.tokenizer"):
        convert_state_dict({"wte.weight": np.zeros((50257, 4), np.float32)}, template, "plain")


# -- in a run ------------------------------------------------------------------------------
def test_zeroshot_prompts_are_encoded_by_the_run_tokenizer(monkeypatch):
    seen = []

    def encode_texts(ctx, text, mask):  # the text tower's input, recorded
        seen.append((text, mask))
        return np.ones((len(text), 2), np.float32)

    monkeypatch.setattr(contrastive, "encode_texts", encode_texts)
    bert = load_tokenizer(BERT)
    ctx = types.SimpleNamespace(vocab=bert, spec=types.SimpleNamespace(max_text_len=8))
    emb = contrastive.class_prompt_embeddings(ctx, ["cat", "dog"], ["a photo of a {}"])
    assert emb.shape == (2, 2)
    text, mask = seen[0]
    expected = [bert.encode(f"a photo of a {c}", 8) for c in ("cat", "dog")]
    np.testing.assert_array_equal(text, np.stack([e[0] for e in expected]))
    np.testing.assert_array_equal(mask, np.stack([e[1] for e in expected]))
    assert (text[:, 0] == bert.cls_id).all()


def test_data_tokenizer_feeds_the_batches_and_sizes_the_text_tower(tmp_path):
    """Tiny shapes CLIP with open_clip's text tower and the CLIP tokenizer: the batches
    carry its ids, no vocab.json is written, and the tower built from the DataSpec has
    its vocabulary size and embeds a real batch."""
    config = shapes_clip.get_config("tiny")
    config.data.tokenizer = CLIP
    config.data.max_text_len = 12
    config.model.text_encoder = "open_clip_text"
    config.model.encoder_kwargs.text = {
        "context_length": 12, "width": 16, "layers": 1, "num_heads": 2,
    }  # fmt: skip
    data = DataPipeline(config.data, batch_size=8, seed=0, vocab_path=tmp_path / "vocab.json")
    clip = load_tokenizer(CLIP)
    assert data.spec.vocab_size == len(clip) == 1474
    batch = next(data.train_iterator())
    assert (batch["text"][:, 0] == clip.sot_id).all() and not os.path.exists(
        tmp_path / "vocab.json"
    )
    ends = batch["text_mask"].sum(axis=1) - 1
    assert (batch["text"][np.arange(8), ends] == clip.eot_id).all()
    model = build_model(config.model, data.spec)
    batch = {k: v for k, v in batch.items() if k in ("image", "text", "text_mask")}
    variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
    tables = [
        v.shape
        for path, v in jax.tree_util.tree_flatten_with_path(variables)[0]
        if "token_embedding" in jax.tree_util.keystr(path)
    ]
    assert tables == [(1474, 16)]
    assert np.isfinite(np.asarray(jax.jit(model.apply)(variables, batch)["emb/text"])).all()
