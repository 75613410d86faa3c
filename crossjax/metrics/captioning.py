"""Caption metrics on the host (pure Python + numpy): corpus BLEU-4, CIDEr-D, and the
attribute accuracy of `crossjax_shapes` captions.

Captions are strings of space-separated words (already lower-cased and tokenised, as
`Vocabulary.decode` gives them); each hypothesis has one or more references.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence

import numpy as np

from crossjax.data.shape_captions import parse_caption

Ngrams = collections.Counter


def ngram_counts(words: Sequence[str], n: int) -> Ngrams:
    """Counts of the n-grams (tuples of n words) of `words`."""
    return collections.Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _closest_length(ref_lengths: Sequence[int], length: int) -> int:
    """The reference length closest to `length`; ties go to the shorter one."""
    return min(ref_lengths, key=lambda r: (abs(r - length), r))


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4
) -> float:
    """Corpus BLEU-`max_n` (Papineni et al., 2002), uniform weights, no smoothing.

    p_n = sum over hypotheses of n-gram counts clipped by their maximum count in any one
    reference / sum of the hypotheses' n-gram counts (len - n + 1, as coco-caption; nltk
    counts at least 1 per hypothesis, which differs only for hypotheses shorter than n).
    BP = exp(1 - r / c) when c <= r, with c the total hypothesis length and r the sum of
    the reference lengths closest to each hypothesis (ties: the shorter). BLEU = BP *
    exp(mean_n log p_n); 0 when some p_n is 0.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    matched, total = np.zeros(max_n), np.zeros(max_n)
    hyp_length = ref_length = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        words = hypothesis.split()
        ref_words = [r.split() for r in refs]
        if not ref_words:
            raise ValueError(f"hypothesis {hypothesis!r} has no reference")
        hyp_length += len(words)
        ref_length += _closest_length([len(r) for r in ref_words], len(words))
        for n in range(1, max_n + 1):
            counts = ngram_counts(words, n)
            max_ref = collections.Counter()
            for r in ref_words:
                max_ref |= ngram_counts(r, n)  # element-wise maximum
            matched[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            total[n - 1] += max(0, len(words) - n + 1)
    if hyp_length == 0 or np.any(matched == 0):
        return 0.0
    log_precision = np.mean(np.log(matched / total))
    brevity = 1.0 if hyp_length > ref_length else math.exp(1.0 - ref_length / hyp_length)
    return float(brevity * math.exp(log_precision))


def _tf_idf(
    words: Sequence[str], doc_freq: Ngrams, log_num_docs: float, max_n: int
) -> tuple[list[dict[tuple[str, ...], float]], np.ndarray]:
    """Per n: {n-gram: count * (log N - log max(1, df))} and its L2 norm (max_n,)."""
    vectors, norms = [], np.zeros(max_n)
    for n in range(1, max_n + 1):
        vec = {
            g: c * (log_num_docs - math.log(max(1.0, doc_freq[g])))
            for g, c in ngram_counts(words, n).items()
        }
        vectors.append(vec)
        norms[n - 1] = math.sqrt(sum(v * v for v in vec.values()))
    return vectors, norms


def cider_d(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    max_n: int = 4,
    sigma: float = 6.0,
) -> float:
    """Corpus CIDEr-D (Vedantam et al., 2015) as coco-caption computes it.

    Document frequency df(g) = number of examples with n-gram g in any reference; N =
    number of examples. Per example and n: sim_n(h, r) = sum_g min(h_g, r_g) * r_g /
    (|h| |r|) over the tf-idf vectors (hypothesis weights clipped by the reference's),
    times exp(-(len(h) - len(r))^2 / (2 sigma^2)); the example's score is
    10 * mean over n of the mean over its references. Returns the mean over examples.
    (coco-caption measures the length difference in bigrams; in words it is the same
    except between empty and one-word captions.)
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    ref_words = [[r.split() for r in refs] for refs in references]
    doc_freq: Ngrams = collections.Counter()
    for refs in ref_words:
        doc_freq.update({g for r in refs for n in range(1, max_n + 1) for g in ngram_counts(r, n)})
    log_num_docs = math.log(max(len(hypotheses), 1))
    scores = []
    for hypothesis, refs in zip(hypotheses, ref_words, strict=True):
        words = hypothesis.split()
        hyp_vec, hyp_norm = _tf_idf(words, doc_freq, log_num_docs, max_n)
        total = np.zeros(max_n)
        for r in refs:
            ref_vec, ref_norm = _tf_idf(r, doc_freq, log_num_docs, max_n)
            penalty = math.exp(-((len(words) - len(r)) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                dot = sum(min(v, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0)
                          for g, v in hyp_vec[n].items())  # fmt: skip
                if hyp_norm[n] and ref_norm[n]:
                    dot /= hyp_norm[n] * ref_norm[n]
                total[n] += dot * penalty
        scores.append(10.0 * np.mean(total) / max(len(refs), 1))
    return float(np.mean(scores)) if scores else 0.0


SCENE_ATTRIBUTES = ("num_objects", "color", "shape", "size", "relation")


def caption_attribute_accuracy(
    captions: Sequence[str], truth: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """How well generated captions state the attributes of `crossjax_shapes` scenes.

    truth: `num_objects` (N,), `color`, `shape`, `size` (N, 2) (-1 for an absent second
    object) and `relation` (N,) (-1 for one object), in the canonical layout of the
    dataset. Each caption is parsed with `parse_caption`. Returns
    - "all": fraction of scenes whose parsed attributes ALL equal the truth: the number of
      objects, colour, shape and size of each object (in canonical order) and the relation;
    - "num_objects": fraction of scenes with the right number of objects;
    - "color", "shape", "size": fraction of the true objects (over all scenes) whose
      attribute the caption states correctly;
    - "relation": fraction of two-object scenes with the right canonical relation, i.e.
      side by side or stacked; getting which object is left / upper wrong swaps the
      objects, which shows in the per-object attributes and in "all".
    """
    missing = [k for k in SCENE_ATTRIBUTES if k not in truth]
    if missing:
        raise KeyError(f"caption_attribute_accuracy: truth lacks {', '.join(missing)}")
    parsed = [parse_caption(c) for c in captions]
    num = {k: np.asarray(truth[k]) for k in SCENE_ATTRIBUTES}
    if any(len(v) != len(parsed) for v in num.values()):
        raise ValueError("caption_attribute_accuracy: captions and truth differ in length")
    if not parsed:
        return {"all": 0.0, **{k: 0.0 for k in SCENE_ATTRIBUTES}}
    got = {k: np.array([p[k] for p in parsed]) for k in SCENE_ATTRIBUTES}
    right = {k: got[k] == num[k] for k in SCENE_ATTRIBUTES}  # (N,) or (N, 2)
    scene_right = right["num_objects"] & right["relation"]
    for key in ("color", "shape", "size"):
        scene_right &= right[key].all(axis=1)
    present = num["color"] >= 0  # (N, 2): the true objects
    pairs = num["num_objects"] == 2
    out = {"all": float(scene_right.mean()), "num_objects": float(right["num_objects"].mean())}
    for key in ("color", "shape", "size"):
        out[key] = float(right[key][present].mean()) if present.any() else 0.0
    out["relation"] = float(right["relation"][pairs].mean()) if pairs.any() else 0.0
    return out
