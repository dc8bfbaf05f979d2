"""Kaldi-compatible 80-dim log-mel filterbank features in JAX.

Matches ``torchaudio.compliance.kaldi.fbank`` / ``transformers``'
``Speech2TextFeatureExtractor`` (without cepstral normalization): 25 ms frames
(400 samples) every 10 ms (160 samples) at 16 kHz with snip-edges framing,
input scaled to the 16-bit integer range, no dither, per-frame DC removal,
pre-emphasis 0.97, Povey window, 512-point FFT, power spectrum, 80 triangular
mel bins (Kaldi mel scale, 20 Hz to 8 kHz) and ``log(max(energy, float32 eps))``.

DC removal, pre-emphasis, windowing and the FFT run in float64: low-frequency
bins of speech frames can sit ~100 dB below the frame energy, where float32
rounding of the windowed frame alone changes the log energy by up to ~1e-2.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mlst_jax.audio.io import SAMPLE_RATE

__all__ = ["fbank", "fbank_batch", "num_frames", "bucket_length", "SAMPLE_RATE", "NUM_MEL_BINS"]

NUM_MEL_BINS = 80
FRAME_LENGTH = 400
FRAME_SHIFT = 160
FFT_LENGTH = 512
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
LOG_FLOOR = float(np.finfo(np.float32).eps)
_CHUNK_FRAMES = 512


def num_frames(num_samples):
    """Number of snip-edges frames for ``num_samples`` samples (0 if shorter than one frame)."""
    n = np.asarray(num_samples)
    return np.where(n >= FRAME_LENGTH, 1 + (n - FRAME_LENGTH) // FRAME_SHIFT, 0)


def _kaldi_mel(freq):
    return 1127.0 * np.log(1.0 + np.asarray(freq, np.float64) / 700.0)


@functools.lru_cache(maxsize=None)
def _mel_banks() -> np.ndarray:
    """Kaldi triangular mel filters, shape [FFT_LENGTH // 2 + 1, NUM_MEL_BINS], triangular in mel space."""
    edges = np.linspace(_kaldi_mel(LOW_FREQ), _kaldi_mel(SAMPLE_RATE / 2), NUM_MEL_BINS + 2)
    bins = _kaldi_mel(SAMPLE_RATE / FFT_LENGTH * np.arange(FFT_LENGTH // 2 + 1))[:, None]
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    up = (bins - left) / (center - left)
    down = (right - bins) / (right - center)
    return np.maximum(0.0, np.minimum(up, down))


@functools.lru_cache(maxsize=None)
def _povey_window() -> np.ndarray:
    return np.hanning(FRAME_LENGTH) ** 0.85


def _frames(waveforms: jax.Array) -> jax.Array:
    """Snip-edges framing of [B, N] waveforms -> [B, F, FRAME_LENGTH] (hop reshape, no gather)."""
    batch, n = waveforms.shape
    count = 1 + (n - FRAME_LENGTH) // FRAME_SHIFT
    rows = count + 2
    x = jnp.pad(waveforms, ((0, 0), (0, max(rows * FRAME_SHIFT - n, 0))))[:, : rows * FRAME_SHIFT]
    hops = x.reshape(batch, rows, FRAME_SHIFT)
    tail = FRAME_LENGTH - 2 * FRAME_SHIFT
    return jnp.concatenate([hops[:, :count], hops[:, 1 : count + 1], hops[:, 2 : count + 2, :tail]], axis=-1)


def _frames_log_mel(frames: jax.Array) -> jax.Array:
    """Log-mel energies of [..., FRAME_LENGTH] frames in [-1, 1] -> [..., NUM_MEL_BINS] float32."""
    x = frames.astype(jnp.float64) * 32768.0
    x = x - x.mean(axis=-1, keepdims=True)
    x = jnp.concatenate([x[..., :1] * (1.0 - PREEMPHASIS), x[..., 1:] - PREEMPHASIS * x[..., :-1]], axis=-1)
    spec = jnp.fft.rfft(x * _povey_window(), n=FFT_LENGTH)
    power = (spec.real**2 + spec.imag**2).astype(jnp.float32)
    mel = power @ jnp.asarray(_mel_banks(), jnp.float32)
    return jnp.log(jnp.maximum(mel, LOG_FLOOR))


def _log_mel(waveforms: jax.Array) -> jax.Array:
    """Log-mel features of every frame of [B, N] waveforms -> [B, F, NUM_MEL_BINS].

    Utterances, and frames within an utterance, are processed in cache-sized
    chunks by sequential maps: on CPU this is several times faster than one
    pass over a large batch, whose float64 intermediates spill out of cache.
    """

    def utterance(waveform):
        return jax.lax.map(_frames_log_mel, _frames(waveform[None])[0], batch_size=_CHUNK_FRAMES)

    return jax.lax.map(utterance, waveforms)


@jax.jit
def _fbank_batch_jit(waveforms: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    feats = _log_mel(waveforms)
    lengths = jnp.minimum(lengths.astype(jnp.int32), waveforms.shape[1])
    n_frames = jnp.where(lengths >= FRAME_LENGTH, 1 + (lengths - FRAME_LENGTH) // FRAME_SHIFT, 0)
    valid = jnp.arange(feats.shape[1])[None, :] < n_frames[:, None]
    return jnp.where(valid[..., None], feats, 0.0), n_frames


def fbank_batch(waveforms, lengths) -> tuple[jax.Array, jax.Array]:
    """Batched log-mel filterbanks of zero-padded 16 kHz waveforms (jit-compiled).

    Args:
      waveforms: [B, N] float32 samples in [-1, 1], zero-padded to a common N >= 400.
      lengths: [B] int number of valid samples per item.

    Returns:
      ``(feats, n_frames)``: float32 [B, F, 80] with ``F = 1 + (N - 400) // 160``,
      frames at or past ``n_frames[b]`` set to zero; int32 [B] valid frame counts.
      Shapes depend only on (B, N), so one compilation serves each padded shape.
      Runs with 64-bit types enabled (thread-locally) for Kaldi parity; also
      usable inside an outer ``jax.jit``.
    """
    waveforms = jnp.asarray(waveforms, jnp.float32)
    if waveforms.ndim != 2 or waveforms.shape[1] < FRAME_LENGTH:
        raise ValueError(
            f"fbank_batch expects [batch, samples] waveforms with at least {FRAME_LENGTH} samples, "
            f"got shape {tuple(waveforms.shape)}"
        )
    with jax.enable_x64(True):
        return _fbank_batch_jit(waveforms, jnp.asarray(lengths, jnp.int32))


def bucket_length(num_samples: int) -> int:
    """Padded length used by :func:`fbank`: at least 1 s, growing geometrically (ratio 2**0.25) in 0.1 s steps."""
    if num_samples <= SAMPLE_RATE:
        return SAMPLE_RATE
    step = SAMPLE_RATE // 10
    exponent = math.ceil(4 * math.log2(num_samples / SAMPLE_RATE) - 1e-9) / 4
    return max(math.ceil(SAMPLE_RATE * 2**exponent / step) * step, math.ceil(num_samples / step) * step)


def fbank(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """80-dim Kaldi log-mel filterbank of one mono 16 kHz waveform (no CMVN).

    Args:
      waveform: 1-D float samples in [-1, 1] (signed integer PCM is scaled by its full range).
      sample_rate: must be 16000; resample first otherwise (e.g. ``load_audio(path, 16000)``).

    Returns:
      float32 array [1 + (N - 400) // 160, 80].

    Raises:
      ValueError: on a wrong sample rate, non-1-D, empty or non-finite input, or
        fewer than 400 samples. The waveform is zero-padded to a bucketed length
        (see :func:`bucket_length`) so few shapes are ever compiled.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"fbank requires {SAMPLE_RATE} Hz audio, got {sample_rate} Hz; resample first "
            f"(e.g. load_audio(path, target_sr={SAMPLE_RATE}) or librosa.resample)"
        )
    w = np.asarray(waveform)
    if w.ndim != 1:
        raise ValueError(
            f"fbank expects a 1-D mono waveform, got shape {w.shape}; down-mix multi-channel audio to mono first"
        )
    if w.size == 0:
        raise ValueError("fbank got an empty waveform (0 samples)")
    if np.issubdtype(w.dtype, np.signedinteger):
        w = w / float(np.iinfo(w.dtype).max + 1)
    w = w.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(w)))
    if bad:
        raise ValueError(f"fbank got a waveform with {bad} non-finite (NaN/inf) samples")
    if w.size < FRAME_LENGTH:
        raise ValueError(
            f"waveform too short: {w.size} samples, need at least one 25 ms frame ({FRAME_LENGTH} samples at 16 kHz)"
        )
    padded = np.zeros((1, bucket_length(w.size)), np.float32)
    padded[0, : w.size] = w
    feats, _ = fbank_batch(padded, np.array([w.size], np.int32))
    return np.asarray(feats[0, : int(num_frames(w.size))])
