"""What a model needs to know about its data, decided by the pipeline at start-up."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Static facts about the batches a model will see (per example, no batch dim).

    modalities: the modality keys present in the batch, e.g. ("image", "text", "audio").
    num_classes: number of classes of `label`, or None when the dataset has no label.
    vocab_size: size of the tokenizer's vocabulary (ids 0..vocab_size-1; for the word
      vocabulary 0 = padding, 1 = unknown), the text tower's embedding rows.
    max_text_len: L, the padded length of `text`.
    image_shape: (H, W, C) of `image`.
    audio_shape: (T,) waveform length of `audio`.
    sample_rate: audio sample rate in Hz.
    """

    modalities: tuple[str, ...]
    num_classes: int | None = None
    vocab_size: int | None = None
    max_text_len: int | None = None
    image_shape: tuple[int, int, int] | None = None
    audio_shape: tuple[int, ...] | None = None
    sample_rate: int | None = None


def dummy_batch(spec: DataSpec, batch_size: int = 1) -> dict:
    """Zeros shaped like a Batch of `spec` (used to initialise models and trace shapes)."""
    import numpy as np  # local: keeps this module import-light

    batch: dict = {}
    if "image" in spec.modalities:
        batch["image"] = np.zeros((batch_size, *spec.image_shape), np.float32)
    if "text" in spec.modalities:
        batch["text"] = np.zeros((batch_size, spec.max_text_len), np.int32)
        batch["text_mask"] = np.ones((batch_size, spec.max_text_len), bool)
    if "audio" in spec.modalities:
        batch["audio"] = np.zeros((batch_size, *spec.audio_shape), np.float32)
    if spec.num_classes is not None:
        batch["label"] = np.zeros((batch_size,), np.int32)
    return batch
