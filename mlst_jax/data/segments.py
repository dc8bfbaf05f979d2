"""Audio segments of corpus files: the length and rate of a file from its header (`probe_audio`) and one segment
read as mono float32 at a target rate (`load_segment`), seeking where the format allows."""
from __future__ import annotations

import os
import re

import numpy as np
import soundfile as sf

from mlst_jax.audio.io import SAMPLE_RATE, load_audio, mono_at

__all__ = ["AudioDecoderUnavailable", "probe_audio", "load_segment", "END_TOLERANCE"]

END_TOLERANCE = 0.01
"""Seconds a segment may end past its file's end (rounding of offsets) before it is skipped."""

_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_M4A_SUFFIXES = (".m4a", ".mp4", ".aac")


class AudioDecoderUnavailable(ValueError):
    """No installed decoder can read this audio format (raised whatever the skip policy)."""


def _audioread_backends() -> str:
    try:
        import audioread

        return ", ".join(b.__name__ for b in audioread.available_backends()) or "no backend"
    except Exception as e:
        return f"no usable backend ({type(e).__name__})"


def probe_audio(path: str | os.PathLike) -> tuple[int, int]:
    """``(n_samples, sample_rate)`` of an audio file, from its header where possible.

    Formats libsndfile cannot read are decoded in full with librosa/audioread.

    Raises:
      AudioDecoderUnavailable: for MP4/AAC (``.m4a``) audio no decoder here reads;
        the message says how to convert it.
      ValueError: naming the file when it is missing, unreadable, corrupt or truncated.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such audio file")
    try:
        info = sf.info(path)
    except Exception:
        try:
            audio, sr = load_audio(path, target_sr=None)
        except ValueError as e:
            if path.lower().endswith(_M4A_SUFFIXES):
                wav = os.path.splitext(path)[0] + ".wav"
                raise AudioDecoderUnavailable(
                    f"{path}: cannot decode this MP4/AAC audio (libsndfile does not read MP4; audioread needs "
                    f"ffmpeg or GStreamer and has {_audioread_backends()}). Convert it, e.g. `ffmpeg -i {path} "
                    f"-ar 16000 -ac 1 {wav}`; a .wav or .flac file next to the .m4a is used instead. ({e})"
                ) from e
            raise
        return len(audio), sr
    match = _DATA_SIZE.search(info.extra_info or "")
    if match and 0 < int(match.group(2)) < int(match.group(1)) < 0xFFFFFFF0:
        raise ValueError(
            f"{path}: truncated audio file (header declares {match.group(1)} data bytes, file holds {match.group(2)})"
        )
    if info.frames <= 0:
        raise ValueError(f"{path}: audio file contains no samples")
    return int(info.frames), int(info.samplerate)


def load_segment(
    path: str | os.PathLike, offset: float = 0.0, duration: float | None = None, target_sr: int | None = SAMPLE_RATE
) -> np.ndarray:
    """Load ``[offset, offset + duration)`` seconds of an audio file as mono float32.

    Seeks with soundfile where it can (WAV/FLAC/MP3...), else decodes the whole
    file with :func:`mlst_jax.audio.load_audio`. Sample positions are
    ``round(seconds * file_rate)``. Down-mixing and resampling to ``target_sr``
    are logged at INFO level with the file name and counted by
    :func:`mlst_jax.audio.io.count_conversions`.

    Raises:
      ValueError: naming the file if it is unreadable, the segment is empty, lies
        more than ``END_TOLERANCE`` seconds past the end, or holds non-finite samples.
    """
    path = os.fspath(path)
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            start = round(offset * sr)
            n = -1 if duration is None else round(duration * sr)
            f.seek(start)
            audio = f.read(n, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        full, sr = load_audio(path, target_sr=None)
        start = round(offset * sr)
        n = len(full) - start if duration is None else round(duration * sr)
        audio = full[start : start + n, None]
    if duration is not None and len(audio) < n - END_TOLERANCE * sr:
        raise ValueError(
            f"{path}: segment {offset:.3f}s + {duration:.3f}s extends past the end of the audio "
            f"({(start + len(audio)) / sr:.3f}s)"
        )
    if audio.size == 0:
        raise ValueError(f"{path}: empty segment at {offset:.3f}s")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{path}: segment at {offset:.3f}s contains non-finite samples")
    return mono_at(audio, sr, target_sr, path)
