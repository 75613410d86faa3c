"""Measures how hard each modality of crossjax_digits is, with quick sklearn proxies.

PYTHONPATH=. python scripts/dataset_stats.py --data_dir /tmp/crossjax_data --config default

Prepares `crossjax_digits/<config>` into --data_dir (array_record, no TensorFlow), trains
one simple classifier per modality on train and prints test accuracies:
image -> MLP (64-128-10) and logistic regression on the 64 pixels; text -> bag of words +
logistic regression; audio -> log-magnitude spectrogram (Hann frames of 256, hop 128, rfft),
max over time, + logistic regression; fusion -> product of the three posteriors
(MLP image, text, audio) and logistic regression on the concatenated features.
The dataset is tuned so each modality is ~0.8-0.9 and fusion >= 0.985.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np
from absl import flags
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's crossjax

from crossjax import cli  # noqa: E402
from crossjax.data.digits import CrossjaxDigits, DigitsConfig  # noqa: E402

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to prepare the dataset.", required=True)
_CONFIG = flags.DEFINE_string("config", "default", "Builder config name: default or tiny.")
_SEED = flags.DEFINE_integer(
    "seed", None, "If set, the `default` sizes with this seed (config name seed<N>)."
)

FRAME, HOP = 256, 128


def log_spectrogram(audio: np.ndarray) -> np.ndarray:
    """(N, T) waveforms -> (N, frames, FRAME // 2 + 1) log-magnitude spectrograms."""
    num_frames = 1 + (audio.shape[1] - FRAME) // HOP
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(num_frames)[:, None]
    frames = audio[:, idx] * np.hanning(FRAME)
    return np.log(np.abs(np.fft.rfft(frames, axis=-1)) + 1e-4)


def load_split(source) -> dict[str, np.ndarray]:
    """Random-access source -> dict of stacked numpy arrays (text as a list of str)."""
    records = [source[i] for i in range(len(source))]
    return {
        "image": np.stack([r["image"].reshape(-1) for r in records]),
        "text": [r["text"].decode() for r in records],
        "audio": np.stack([r["audio"] for r in records]),
        "label": np.array([r["label"] for r in records]),
    }


def proxy_accuracies(train: dict, test: dict) -> dict[str, float]:
    """Test accuracy of each single-modality proxy and of two fusions, and the correlation
    between single-modality errors (near 0: independent)."""
    y_train, y_test = train["label"], test["label"]
    acc, log_probs = {}, []

    mlp = MLPClassifier((128,), max_iter=300, early_stopping=True, random_state=0)
    mlp.fit(train["image"], y_train)
    acc["image (MLP on pixels)"] = mlp.score(test["image"], y_test)
    log_probs.append(np.log(mlp.predict_proba(test["image"]) + 1e-9))
    logreg = LogisticRegression(max_iter=2000).fit(train["image"], y_train)
    acc["image (logistic on pixels)"] = logreg.score(test["image"], y_test)

    vectorizer = CountVectorizer(token_pattern=r"(?u)\b\w+\b")  # keep one-character "7"
    text_train = vectorizer.fit_transform(train["text"])
    text_test = vectorizer.transform(test["text"])
    text_model = LogisticRegression(max_iter=2000).fit(text_train, y_train)
    acc["text (bag of words, logistic)"] = text_model.score(text_test, y_test)
    log_probs.append(np.log(text_model.predict_proba(text_test) + 1e-9))

    scaler = StandardScaler().fit(log_spectrogram(train["audio"]).max(axis=1))
    audio_train = scaler.transform(log_spectrogram(train["audio"]).max(axis=1))
    audio_test = scaler.transform(log_spectrogram(test["audio"]).max(axis=1))
    audio_model = LogisticRegression(max_iter=2000, C=0.1).fit(audio_train, y_train)
    acc["audio (spectrogram max, logistic)"] = audio_model.score(audio_test, y_test)
    log_probs.append(np.log(audio_model.predict_proba(audio_test) + 1e-9))

    errors = {
        name: np.argmax(lp, axis=1) != y_test
        for name, lp in zip(("image", "text", "audio"), log_probs, strict=True)
    }
    for a, b in itertools.combinations(errors, 2):
        acc[f"error correlation {a}/{b}"] = float(np.corrcoef(errors[a], errors[b])[0, 1])
    acc["fusion (product of posteriors)"] = float(
        np.mean(np.argmax(sum(log_probs), axis=1) == y_test)
    )
    concat_train = sparse.hstack([train["image"], text_train, audio_train]).tocsr()
    concat_test = sparse.hstack([test["image"], text_test, audio_test]).tocsr()
    concat_model = LogisticRegression(max_iter=3000, C=0.1).fit(concat_train, y_train)
    acc["fusion (logistic on concatenation)"] = concat_model.score(concat_test, y_test)
    return acc


def main(argv: list[str]) -> None:
    del argv
    start = time.perf_counter()
    config = _CONFIG.value
    if _SEED.value is not None:
        config = DigitsConfig(name=f"seed{_SEED.value}", seed=_SEED.value)
    builder = CrossjaxDigits(config=config, data_dir=_DATA_DIR.value, file_format="array_record")
    builder.download_and_prepare()
    prepared = time.perf_counter()
    sources = builder.as_data_source()
    train, test = load_split(sources["train"]), load_split(sources["test"])
    acc = proxy_accuracies(train, test)
    print(f"\ncrossjax_digits/{builder.builder_config.name}: {len(train['label'])} train, "
          f"{len(test['label'])} test; prepare {prepared - start:.1f} s (0 if cached)")  # fmt: skip
    print(f"{'test accuracy (or error correlation)':40s} value")
    for name, value in acc.items():
        print(f"{name:40s} {value:.4f}")


if __name__ == "__main__":
    cli.run(main)
