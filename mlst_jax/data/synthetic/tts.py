"""Minimal espeak-ng text-to-speech through ctypes.

Uses the shared library and voice data shipped by the ``espeakng-loader``
wheel, so no system espeak installation is needed.

espeak-ng keeps synthesis state (e.g. its pitch-flutter phase) in static
variables that ``espeak_Initialize``/``espeak_Terminate`` do not reset, so
repeated calls in one process would give slightly different audio. To make
output a pure function of the arguments, each call loads a private copy of the
library, synthesizes, and unloads it again (about 6 ms overhead). Calls are
serialized by a module-level lock.
"""
from __future__ import annotations

import _ctypes
import atexit
import ctypes
import os
import shutil
import tempfile
import threading

import numpy as np

from mlst_jax.audio.io import SAMPLE_RATE

__all__ = ["synthesize", "synthesize_16k"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_RATE, _PITCH = 1, 3
_EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_chunks: list[np.ndarray] = []
_private_lib: list[str] = []


def _on_audio(wav, n, _events):
    if n > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0


_callback = _CALLBACK(_on_audio)


def _library_path() -> str:
    """Path of a process-private copy of the wheel's libespeak-ng."""
    if not _private_lib:
        import espeakng_loader

        tmp = tempfile.mkdtemp(prefix="mlst_espeak_")
        atexit.register(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "libespeak-ng-private.so")
        shutil.copy(espeakng_loader.get_library_path(), path)
        _private_lib.append(path)
    return _private_lib[0]


def _open() -> tuple[ctypes.CDLL, int]:
    import espeakng_loader

    lib = ctypes.CDLL(_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    data = espeakng_loader.get_data_path()
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_DONT_EXIT)
    if sr <= 0:
        _ctypes.dlclose(lib._handle)
        raise RuntimeError(f"espeak_Initialize failed (returned {sr}) with data path {data}")
    lib.espeak_SetSynthCallback(_callback)
    # espeak-ng seeds its breath/whisper noise from the clock at initialization; fix it for reproducibility.
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed(0)
    return lib, sr


def synthesize(
    text: str,
    lang: str = "en",
    voice_variant: str | None = None,
    rate: int = 175,
    pitch: int = 50,
) -> tuple[np.ndarray, int]:
    """Synthesize ``text`` with espeak-ng.

    Args:
      text: UTF-8 text to speak.
      lang: espeak-ng voice/language name, e.g. ``"en"``, ``"de"``, ``"fr"``.
      voice_variant: optional variant such as ``"f3"`` or ``"m2"`` (``lang+variant``).
      rate: speaking rate in words per minute.
      pitch: base pitch, 0-100.

    Returns:
      ``(audio, sample_rate)``: float32 mono audio in [-1, 1] at espeak-ng's
      native rate (22050 Hz). Identical arguments give identical audio.
    """
    if not text or not text.strip():
        raise ValueError("synthesize: text is empty")
    name = lang if voice_variant is None else f"{lang}+{voice_variant}"
    buf = text.encode("utf-8") + b"\0"
    with _lock:
        lib, sr = _open()
        _chunks.clear()
        try:
            if lib.espeak_SetVoiceByName(name.encode()) != _EE_OK:
                raise ValueError(f"synthesize: espeak-ng has no voice {name!r} (voice names: 'en', 'de', 'cmn', ...)")
            lib.espeak_SetParameter(_RATE, int(rate), 0)
            lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with error {err} for text {text[:50]!r}")
            pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        finally:
            _chunks.clear()
            lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)
    return pcm.astype(np.float32) / 32768.0, sr


def synthesize_16k(
    text: str,
    lang: str = "en",
    voice_variant: str | None = None,
    rate: int = 175,
    pitch: int = 50,
) -> tuple[np.ndarray, int]:
    """Like :func:`synthesize`, resampled to 16 kHz with librosa (soxr); returns ``(audio, 16000)``."""
    import librosa

    audio, sr = synthesize(text, lang, voice_variant, rate, pitch)
    audio = librosa.resample(audio, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return audio.astype(np.float32), SAMPLE_RATE
