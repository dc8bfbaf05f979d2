"""Audio file loading: mono float32 at a target sample rate."""
from __future__ import annotations

import logging
import os
import re
import warnings

import numpy as np

__all__ = ["load_audio"]

logger = logging.getLogger(__name__)

_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _read_soundfile(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

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


def load_audio(path: str | os.PathLike, target_sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Load an audio file as mono float32.

    Reads with soundfile, falling back to librosa (audioread) for formats
    soundfile cannot decode. Multi-channel audio is averaged to mono and other
    sample rates are resampled with librosa's soxr backend; both are logged at
    INFO level with the file name.

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


def mono_at(audio: np.ndarray, sr: int, target_sr: int | None, path) -> np.ndarray:
    """[samples, channels] → mono float32 at `target_sr` (None keeps `sr`); logs down-mixing and resampling."""
    if audio.shape[1] > 1:
        logger.info("%s: down-mixing %d channels to mono", path, audio.shape[1])
    audio = audio.mean(axis=1, dtype=np.float32)
    if target_sr is not None and sr != target_sr:
        import librosa

        logger.info("%s: resampling %d Hz -> %d Hz", path, sr, target_sr)
        audio = librosa.resample(audio, orig_sr=sr, target_sr=target_sr, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)
