"""Telephone-keypad (DTMF) tones for the audio modality of `crossjax_digits`.

A digit is the sum of two sines: a row frequency (697/770/852/941 Hz) and a column
frequency (1209/1336/1477 Hz) of the keypad (1 2 3 / 4 5 6 / 7 8 9 / _ 0 _). The noisy
version varies timing, gain, tone balance and tuning, may add an interfering tone from the
same keypad, and buries it all in white noise at a random SNR.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 8000  # Hz
AUDIO_SAMPLES = 2000  # 0.25 s
ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COL_HZ = (1209.0, 1336.0, 1477.0)
# digit -> (row index, column index) on the keypad.
KEYPAD = {1: (0, 0), 2: (0, 1), 3: (0, 2), 4: (1, 0), 5: (1, 1), 6: (1, 2),
          7: (2, 0), 8: (2, 1), 9: (2, 2), 0: (3, 1)}  # fmt: skip

# Noise ranges of the noisy version (tuned: a spectrogram classifier is ~0.89 accurate).
SNR_DB = (-14.0, 6.0)  # tone power over the tone's duration vs white noise power
DETUNE = 0.015  # relative frequency error of each tone (the DTMF tolerance)
TWIST_DB = 6.0  # column tone level minus row tone level, uniform in +-TWIST_DB
INTERFERER_PROB = 0.3  # chance of one extra tone at another keypad frequency
INTERFERER_LEVEL = (0.3, 1.0)  # its amplitude relative to the true tone it competes with
DURATION_S = (0.05, 0.25)
GAIN_DB = (-20.0, 0.0)
_RAMP = 40  # samples of raised-cosine fade in/out, so tone edges do not click


def dtmf_frequencies(label: int) -> tuple[float, float]:
    """(row_hz, column_hz) of digit `label` (0..9)."""
    row, col = KEYPAD[label]
    return ROW_HZ[row], COL_HZ[col]


def _envelope(start: int, length: int) -> np.ndarray:
    """(AUDIO_SAMPLES,) float: 1 on [start, start+length) with smooth edges, else 0."""
    env = np.zeros(AUDIO_SAMPLES)
    length = max(2 * _RAMP, min(length, AUDIO_SAMPLES - start))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, _RAMP))
    body = np.concatenate([ramp, np.ones(length - 2 * _RAMP), ramp[::-1]])
    env[start : start + length] = body[: AUDIO_SAMPLES - start]
    return env


def _tone(rng: np.random.Generator, hz: float) -> np.ndarray:
    t = np.arange(AUDIO_SAMPLES) / SAMPLE_RATE
    return np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))


def synthesize_dtmf(rng: np.random.Generator, label: int, *, noisy: bool = True) -> np.ndarray:
    """(AUDIO_SAMPLES,) float32 waveform of digit `label` at SAMPLE_RATE, within [-1, 1].

    noisy=False gives the clean tone pair over the whole clip at amplitude 0.5 each.
    """
    row_hz, col_hz = dtmf_frequencies(label)
    if not noisy:
        return (0.5 * _tone(rng, row_hz) + 0.5 * _tone(rng, col_hz)).astype(np.float32)

    duration = int(rng.uniform(*DURATION_S) * SAMPLE_RATE)
    start = int(rng.integers(0, AUDIO_SAMPLES - min(duration, AUDIO_SAMPLES - 1)))
    env = _envelope(start, duration)
    twist = 10 ** (rng.uniform(-TWIST_DB, TWIST_DB) / 20)
    row_amp, col_amp = 1.0, twist
    detune = 1 + rng.uniform(-DETUNE, DETUNE, size=2)
    signal = env * (
        row_amp * _tone(rng, row_hz * detune[0]) + col_amp * _tone(rng, col_hz * detune[1])
    )
    if rng.random() < INTERFERER_PROB:
        # A wrong row or column tone that overlaps the true one in time.
        if rng.random() < 0.5:
            hz = float(rng.choice([f for f in ROW_HZ if f != row_hz]))
            amp = row_amp
        else:
            hz = float(rng.choice([f for f in COL_HZ if f != col_hz]))
            amp = col_amp
        amp *= rng.uniform(*INTERFERER_LEVEL)
        signal = signal + amp * env * _tone(rng, hz * (1 + rng.uniform(-DETUNE, DETUNE)))

    active = max(int(np.count_nonzero(env > 0.5)), 1)
    signal_power = float(np.sum(signal**2)) / active
    snr = 10 ** (rng.uniform(*SNR_DB) / 10)
    noise = rng.normal(0.0, np.sqrt(signal_power / snr), size=AUDIO_SAMPLES)
    wave = signal + noise
    wave = wave / (np.max(np.abs(wave)) + 1e-8)
    wave = wave * 10 ** (rng.uniform(*GAIN_DB) / 20)
    return wave.astype(np.float32)
