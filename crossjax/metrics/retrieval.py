"""Cross-modal retrieval metrics from a similarity matrix (numpy, host side).

`similarity` (N_images, N_texts) scores every image against every caption (higher is
more similar); `text_to_image` (N_texts,) says which image each caption describes, so an
image may own several captions. Ranks are 1-based and pessimistic about ties: a wrong
item scoring *equal* to the right one counts as ranked above it, so a collapsed model
that gives every pair the same score gets the worst ranks, not perfect ones. A NaN
similarity ranks below every finite score (it counts as -inf), so NaN ties are misses too
and an all-NaN matrix gets the worst ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10)


def _check(similarity: np.ndarray, text_to_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    similarity = np.asarray(similarity, np.float64)
    similarity = np.where(np.isnan(similarity), -np.inf, similarity)  # NaN ranks last
    text_to_image = np.asarray(text_to_image)
    if similarity.ndim != 2 or text_to_image.shape != (similarity.shape[1],):
        raise ValueError(
            f"similarity must be (N_images, N_texts) and text_to_image (N_texts,); got "
            f"{similarity.shape} and {text_to_image.shape}"
        )
    if text_to_image.size and (text_to_image.min() < 0 or text_to_image.max() >= len(similarity)):
        raise ValueError("text_to_image holds an index outside [0, N_images)")
    return similarity, text_to_image.astype(np.int64)


def image_to_text_ranks(similarity: np.ndarray, text_to_image: np.ndarray) -> np.ndarray:
    """Rank (1-based) of each image's best-ranked own caption among all captions: (N_img,).

    rank = 1 + number of other images' captions scoring >= the image's best own caption.
    Images that own no caption get rank 0 (callers drop them; see `retrieval_metrics`).
    """
    similarity, text_to_image = _check(similarity, text_to_image)
    own = text_to_image[None, :] == np.arange(len(similarity))[:, None]  # (N_img, N_txt)
    best_own = np.where(own, similarity, -np.inf).max(axis=1, initial=-np.inf)  # (N_img,)
    beaten_by = np.sum((similarity >= best_own[:, None]) & ~own, axis=1)
    return np.where(own.any(axis=1), 1 + beaten_by, 0)


def text_to_image_ranks(similarity: np.ndarray, text_to_image: np.ndarray) -> np.ndarray:
    """Rank (1-based) of each caption's own image among all images: (N_texts,).

    rank = 1 + number of other images scoring >= the caption's own image.
    """
    similarity, text_to_image = _check(similarity, text_to_image)
    columns = np.arange(similarity.shape[1])
    own_score = similarity[text_to_image, columns]  # (N_txt,)
    at_least = np.sum(similarity >= own_score[None, :], axis=0)  # counts the own image too
    return at_least.astype(np.int64)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose correct item is within the top k: mean(rank <= k)."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks <= k)) if ranks.size else float("nan")


def retrieval_metrics(
    similarity: np.ndarray, text_to_image: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Image->text and text->image recall@k, mean and median rank.

    Keys: `i2t_r{k}` (an image hits if ANY of its captions is in its top k), `t2i_r{k}`,
    `i2t_mean_rank`, `i2t_median_rank`, `t2i_mean_rank`, `t2i_median_rank`. Images that
    own no caption are left out of the image->text numbers.
    """
    i2t = image_to_text_ranks(similarity, text_to_image)
    i2t = i2t[i2t > 0]
    t2i = text_to_image_ranks(similarity, text_to_image)
    metrics: dict[str, float] = {}
    for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            metrics[f"{direction}_r{k}"] = recall_at_k(ranks, k)
        empty = ranks.size == 0
        metrics[f"{direction}_mean_rank"] = float("nan") if empty else float(np.mean(ranks))
        metrics[f"{direction}_median_rank"] = float("nan") if empty else float(np.median(ranks))
    return metrics
