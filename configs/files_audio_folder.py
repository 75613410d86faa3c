"""python scripts/train.py --config configs/files_audio_folder.py --workdir runs/my_audio \
    --config.data.source.path=/path/to/wav_folder

A folder of mono 16-bit WAV files (searched recursively), converted once into the
data_dir: labelled by file name (the part before the first "_": `dog_017.wav` -> "dog";
or `--config.data.source.label_pattern=REGEX` with a group named `label`), or by class
sub-folder (`yes/017.wav`) when the WAVs sit in two or more sub-folders. Test: files
whose name matches `--config.data.source.test_pattern=REGEX`, else a seeded 10% per
class. The fusion classifier on `audio` (log-spectrogram CNN), recordings cropped /
zero-padded to 16,000 samples (1 s at 16 kHz; set `data.audio_length` for your rate).
The Free Spoken Digit Dataset with its official split: configs/spoken_digit.py.
Tiny (8 steps): `--config configs/files_audio_folder.py:tiny`.
"""

from configs.files_manifest import files_classifier


def get_config(variant: str | None = None):
    return files_classifier("audio_folder", ("audio",), variant, audio_length=16000)
