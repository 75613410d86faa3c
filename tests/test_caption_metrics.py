"""Caption metrics against hand-computed examples: corpus BLEU-4, CIDEr-D and the
attribute accuracy of crossjax_shapes captions."""

import math

import numpy as np
import pytest

from crossjax.data.shape_captions import caption_scene
from crossjax.metrics.captioning import caption_attribute_accuracy, cider_d, corpus_bleu


def test_bleu_of_one_pair_is_the_geometric_mean_of_the_precisions():
    # "a b c d e" vs "a b c d f": 1-grams 4/5, 2-grams 3/4 (ab bc cd), 3-grams 2/3,
    # 4-grams 1/2 (abcd); equal lengths, so BP = 1.
    expected = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert corpus_bleu(["a b c d e"], [["a b c d f"]]) == pytest.approx(expected)
    assert corpus_bleu(["a b c d"], [["a b c d"]]) == pytest.approx(1.0)


def test_corpus_bleu_pools_counts_clips_by_the_best_reference_and_penalises_brevity():
    hypotheses = ["the cat sat on the mat", "a dog"]
    references = [["the cat is on the mat", "a cat sat on the mat"], ["a dog runs"]]
    # 1-grams: "the" x2 is allowed (ref 1 has two), so 6/6 + 2/2; 2-grams 5/5 + 1/1;
    # 3-grams 3/4 ("the cat sat" is in neither reference) + 0/0; 4-grams 2/3 ("cat sat on
    # the", "sat on the mat"). c = 6 + 2 = 8, r = 6 + 3 = 9, BP = exp(1 - 9/8).
    expected = math.exp(1 - 9 / 8) * (1 * 1 * 3 / 4 * 2 / 3) ** 0.25
    assert corpus_bleu(hypotheses, references) == pytest.approx(expected)
    # Clipping: "the the the" matches "the" at most twice (ref 1), no bigram matches.
    assert corpus_bleu(["the the the the"], [["the cat the mat"]]) == 0.0


def test_bleu_brevity_uses_the_closest_reference_length_ties_to_the_shorter():
    # Hypothesis of 5 words, references of 4 and 6: the tie goes to 4, so c > r and BP = 1
    # (choosing 6 would give exp(1 - 6/5) = 0.82). All n-grams are in the 6-word reference.
    assert corpus_bleu(["a b c d e"], [["a b c d", "a b c d e f"]]) == pytest.approx(1.0)
    # A 4-word hypothesis against one 8-word reference: BP = exp(1 - 8/4), precisions 1.
    assert corpus_bleu(["a b c d"], [["a b c d e f g h"]]) == pytest.approx(math.exp(-1.0))


def test_bleu_is_zero_without_a_matching_four_gram_and_checks_lengths():
    assert corpus_bleu(["a b c x e"], [["a b c d e"]]) == 0.0
    with pytest.raises(ValueError, match="reference sets"):
        corpus_bleu(["a"], [])


def test_cider_d_matches_a_hand_computed_corpus():
    # N = 2 examples; every reference n-gram occurs in one example, so idf = log 2 = w
    # for all and cancels in the cosine. Example 1: "a b" vs "a b": sim_1 = sim_2 = 1,
    # sim_3 = sim_4 = 0 (no 3-grams), same length: 10 * mean(1, 1, 0, 0) = 5.
    # Example 2: "c" vs "c d": sim_1 = w^2 / (w * sqrt(2) w) = 1/sqrt(2), the rest 0,
    # length penalty exp(-(1 - 2)^2 / (2 * 6^2)): 10 * (1/sqrt(2)) * exp(-1/72) / 4.
    example_2 = 10 * (1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    expected = (5.0 + example_2) / 2
    assert cider_d(["a b", "c"], [["a b"], ["c d"]]) == pytest.approx(expected)


def test_cider_d_clips_repeated_words_and_ignores_words_in_every_reference():
    # Unigrams only (max_n=1). Example 1: hypothesis {a: 2w}, reference {a: w, b: w}:
    # clipped dot min(2w, w) * w = w^2, norms 2w and sqrt(2) w -> 1 / (2 sqrt(2))
    # (1/sqrt(2) without clipping). Example 2: "c" vs "c" -> 1. Score 10 * mean.
    expected = 10 * (1 / (2 * math.sqrt(2)) + 1.0) / 2
    assert cider_d(["a a", "c"], [["a b"], ["c"]], max_n=1) == pytest.approx(expected)
    # "a" is in every example's references: idf = log 2 - log 2 = 0, so matching it earns
    # nothing (while BLEU-1 would count it).
    assert cider_d(["a b", "a"], [["a c"], ["a d"]], max_n=1) == 0.0


def test_caption_attribute_accuracy_counts_scenes_objects_and_relations():
    truth = {  # canonical: object 0 is the left / upper object, relation 0 left, 2 above
        "num_objects": np.array([1, 2, 2, 1]),
        "color": np.array([[0, -1], [2, 1], [0, 6], [0, -1]]),  # red | blue, green | ...
        "shape": np.array([[0, -1], [1, 2], [0, 3], [0, -1]]),
        "size": np.array([[0, -1], [1, 0], [0, 1], [0, -1]]),
        "relation": np.array([-1, 0, 2, -1]),
    }
    captions = [
        "a small red circle",  # right
        "a small green triangle to the right of a large blue square",  # right, inverted
        "a small red circle left of a large white cross",  # objects right, relation wrong
        "a large blue circle",  # colour and size wrong
    ]
    got = caption_attribute_accuracy(captions, truth)
    assert got == pytest.approx(
        {
            "all": 2 / 4,
            "num_objects": 1.0,
            "color": 5 / 6,
            "shape": 1.0,
            "size": 5 / 6,
            "relation": 1 / 2,
        }  # fmt: skip
    )


def test_every_grammar_caption_of_a_scene_scores_perfectly():
    rng = np.random.default_rng(0)
    scenes = []
    for i in range(40):
        two = i % 2 == 1
        scenes.append({
            "num_objects": 2 if two else 1,
            "color": np.array([i % 7, (i + 3) % 7 if two else -1]),
            "shape": np.array([i % 5, (i + 1) % 5 if two else -1]),
            "size": np.array([i % 2, (i // 2) % 2 if two else -1]),
            "relation": (i // 3) % 2 * 2 if two else -1,
        })  # fmt: skip
    captions = [caption_scene(rng, s) for s in scenes]
    truth = {k: np.array([s[k] for s in scenes]) for k in scenes[0]}
    assert caption_attribute_accuracy(captions, truth)["all"] == 1.0


def test_bleu_agrees_with_nltk_when_installed():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    hypotheses = ["the cat sat on the mat", "there is a big red box above a small disc"]
    references = [["the cat is on the mat", "a cat sat on the mat"],
                  ["a big red box above a small disc", "there is a red box over a disc"]]  # fmt: skip
    expected = nltk_bleu.corpus_bleu(
        [[r.split() for r in refs] for refs in references], [h.split() for h in hypotheses]
    )
    assert corpus_bleu(hypotheses, references) == pytest.approx(expected)
