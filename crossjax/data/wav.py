"""WAV files of the user's sources: mono 16-bit PCM, read with the standard `wave` module.

`wave` does not notice a truncated file (a header promising more frames than the file
holds): `read_wav` and `wav_problem` compare the two, so such a file is a bad row.
"""

from __future__ import annotations

import os
import wave

import numpy as np


class BadWav(ValueError):
    """A WAV file that cannot be used; the message says why (the caller names the file)."""


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """A mono 16-bit PCM WAV file -> (samples (T,) int16, sample rate in Hz).

    Raises BadWav for a missing, unreadable, non-mono-16-bit or truncated file.
    """
    name = os.path.basename(path)
    if not os.path.exists(path):
        raise BadWav(f"missing file {path}")
    try:
        with wave.open(path, "rb") as f:
            if f.getnchannels() != 1 or f.getsampwidth() != 2:
                raise BadWav(
                    f"{name} is not mono 16-bit PCM ({f.getnchannels()} channels, {8 * f.getsampwidth()}-bit)"
                )
            expected = f.getnframes()
            frames = f.readframes(expected)
            rate = f.getframerate()
    except (wave.Error, EOFError, OSError) as e:
        raise BadWav(f"cannot read WAV {name} ({e})") from None
    if len(frames) < 2 * expected:
        raise BadWav(
            f"truncated WAV {name} (its header says {expected} frames, it holds {len(frames) // 2})"
        )
    return np.frombuffer(frames, "<i2").copy(), rate


def wav_problem(path: str) -> str:
    """Why WAV file `path` is unusable ("" when it reads in full)."""
    try:
        read_wav(path)
    except BadWav as e:
        return str(e)
    return ""


def wav_rate(path: str) -> int | None:
    """The sample rate of WAV file `path` from its header (None when unreadable)."""
    try:
        with wave.open(path, "rb") as f:
            return f.getframerate()
    except (wave.Error, EOFError, OSError):
        return None
