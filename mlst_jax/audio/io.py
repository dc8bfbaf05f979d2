"""Audio file loading: mono float32 at a target sample rate; counting the files down-mixed or resampled."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import warnings
from collections import Counter
from typing import Iterator

import numpy as np
import soundfile as sf

__all__ = ["SAMPLE_RATE", "load_audio", "AudioConversions", "count_conversions"]

SAMPLE_RATE = 16000  # Hz: every model, feature and corpus of the project

logger = logging.getLogger(__name__)

_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _read_soundfile(path: str) -> tuple[np.ndarray, int]:
    info = sf.info(path)
    match = _DATA_SIZE.search(info.extra_info or "")
    if match and 0 < int(match.group(2)) < int(match.group(1)) < 0xFFFFFFF0:
        raise ValueError(
            f"{path}: truncated audio file (header declares {match.group(1)} data bytes, "
            f"file holds {match.group(2)})"
        )
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    return audio, sr


def _read_librosa(path: str) -> tuple[np.ndarray, int]:
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audio, sr = librosa.load(path, sr=None, mono=False, dtype=np.float32)
    return np.atleast_2d(audio).T, int(sr)


def load_audio(path: str | os.PathLike, target_sr: int | None = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Load an audio file as mono float32.

    Reads with soundfile, falling back to librosa (audioread) for formats
    soundfile cannot decode. Multi-channel audio is averaged to mono and other
    sample rates are resampled with librosa's soxr backend; both are logged at
    INFO level with the file name and counted by :func:`count_conversions`.

    Args:
      path: audio file path.
      target_sr: output sample rate; ``None`` keeps the file's native rate.

    Returns:
      ``(audio, sample_rate)`` with ``audio`` a 1-D float32 array.

    Raises:
      ValueError: naming the file if it is missing, unreadable, corrupt,
        truncated, empty or contains non-finite samples.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such audio file")
    try:
        audio, sr = _read_soundfile(path)
    except ValueError:
        raise
    except Exception as sf_error:
        try:
            audio, sr = _read_librosa(path)
        except Exception as lr_error:
            raise ValueError(
                f"{path}: unreadable or corrupt audio file (soundfile: {sf_error}; librosa: "
                f"{type(lr_error).__name__}: {lr_error})"
            ) from lr_error
    if audio.size == 0:
        raise ValueError(f"{path}: audio file contains no samples")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{path}: audio file contains non-finite (NaN/inf) samples")
    return mono_at(audio, sr, target_sr, path), int(sr if target_sr is None else target_sr)


@dataclasses.dataclass
class AudioConversions:
    """The audio files loaded within :func:`count_conversions`: which were down-mixed and which resampled."""

    loaded: set[str] = dataclasses.field(default_factory=set)
    channels: dict[str, int] = dataclasses.field(default_factory=dict)
    resampled: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    def add(self, path, channels: int, sr: int, target_sr: int | None) -> None:
        """Count one load of `path` (a file loaded several times, e.g. per segment, counts once)."""
        path = os.fspath(path)
        self.loaded.add(path)
        if channels > 1:
            self.channels[path] = channels
        if target_sr is not None and sr != target_sr:
            self.resampled[path] = (sr, target_sr)

    def summary(self) -> str:
        """E.g. ``"12 of 400 audio files were stereo (down-mixed to mono), 1 was at 44100 Hz (resampled to
        16 kHz)"``; empty when nothing was converted."""
        groups = [(n, f"{'stereo' if c == 2 else f'{c}-channel'} (down-mixed to mono)")
                  for c, n in sorted(Counter(self.channels.values()).items())]
        groups += [(n, f"at {sr} Hz (resampled to {_rate(target)})")
                   for (sr, target), n in sorted(Counter(self.resampled.values()).items())]
        if not groups:
            return ""
        (n, what), total = groups[0], len(self.loaded)
        first = f"{n} of {total} audio file{'' if total == 1 else 's'} {_was(n)} {what}"
        return ", ".join([first] + [f"{n} {_was(n)} {what}" for n, what in groups[1:]])

    def log(self, log: logging.Logger | None = None, context: str = "") -> None:
        """Log the summary as one warning when any file was converted."""
        if summary := self.summary():
            (log or logger).warning("%s%s", f"{context}: " if context else "", summary)


def _was(n: int) -> str:
    return "was" if n == 1 else "were"


def _rate(hz: int) -> str:
    return f"{hz // 1000} kHz" if hz % 1000 == 0 else f"{hz} Hz"


_COUNTING: list[AudioConversions] = []


@contextlib.contextmanager
def count_conversions() -> Iterator[AudioConversions]:
    """Count the audio files :func:`load_audio` and ``load_segment`` down-mix or resample within the block, to
    report them once (``conversions.log(...)``) rather than per file."""
    conversions = AudioConversions()
    _COUNTING.append(conversions)
    try:
        yield conversions
    finally:
        _COUNTING.remove(conversions)


def mono_at(audio: np.ndarray, sr: int, target_sr: int | None, path) -> np.ndarray:
    """[samples, channels] → mono float32 at `target_sr` (None keeps `sr`); logs and counts down-mixing and
    resampling."""
    for conversions in _COUNTING:
        conversions.add(path, audio.shape[1], sr, target_sr)
    if audio.shape[1] > 1:
        logger.info("%s: down-mixing %d channels to mono", path, audio.shape[1])
    audio = audio.mean(axis=1, dtype=np.float32)
    if target_sr is not None and sr != target_sr:
        import librosa

        logger.info("%s: resampling %d Hz -> %d Hz", path, sr, target_sr)
        audio = librosa.resample(audio, orig_sr=sr, target_sr=target_sr, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)
