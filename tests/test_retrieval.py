"""Retrieval ranks with NaN similarities: NaN ranks below every finite score."""

import numpy as np
import pytest

from crossjax.metrics.retrieval import (
    image_to_text_ranks,
    retrieval_metrics,
    text_to_image_ranks,
)


def test_all_nan_similarities_get_the_worst_ranks():
    n = 4
    metrics = retrieval_metrics(np.full((n, n), np.nan), np.arange(n), ks=(1, 2, 3, 4))
    for direction in ("i2t", "t2i"):
        for k in (1, 2, 3):
            assert metrics[f"{direction}_r{k}"] == 0.0
        assert metrics[f"{direction}_r4"] == 1.0  # every item is within the top N
        assert metrics[f"{direction}_mean_rank"] == n


def test_nan_similarities_rank_below_every_finite_score():
    # Image 0's own caption is NaN: it ranks below the finite (even negative) others.
    # Image 1's own caption scores -5 and beats the NaN score of caption 0.
    similarity = np.array(
        [
            [np.nan, -9.0, -8.0],
            [np.nan, -5.0, -6.0],
            [np.nan, -7.0, 1.0],
        ]
    )
    text_to_image = np.arange(3)
    assert text_to_image_ranks(similarity, text_to_image).tolist() == [3, 1, 1]
    assert image_to_text_ranks(similarity, text_to_image).tolist() == [3, 1, 1]
    metrics = retrieval_metrics(similarity, text_to_image, ks=(1,))
    assert metrics["t2i_r1"] == pytest.approx(2 / 3)
    assert metrics["i2t_r1"] == pytest.approx(2 / 3)


def test_a_nan_competitor_does_not_beat_a_finite_own_score():
    similarity = np.array([[-1.0, np.nan], [np.nan, -1.0]])
    metrics = retrieval_metrics(similarity, np.arange(2), ks=(1,))
    assert metrics["i2t_r1"] == metrics["t2i_r1"] == 1.0
