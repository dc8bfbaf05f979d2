"""Cepstral mean and variance normalization (fairseq conventions) and waveform normalization (HF wav2vec 2.0)."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["utterance_cmvn", "GlobalCMVN", "normalize_waveform"]

UTTERANCE_VAR_FLOOR = 1e-10
GLOBAL_VAR_FLOOR = 1e-8
WAVEFORM_VAR_EPS = 1e-7


def utterance_cmvn(feats, n_frames=None, norm_means: bool = True, norm_vars: bool = True):
    """Per-utterance mean/variance normalization over the valid frames, as fairseq's ``UtteranceCMVN``.

    ``x -> (x - mean) / sqrt(max(var, 1e-10))`` with statistics over the first
    ``n_frames`` frames per dimension (population variance).

    Args:
      feats: [..., T, D] numpy or JAX array.
      n_frames: optional [...] valid frame counts; default all T frames.
      norm_means: subtract the mean.
      norm_vars: divide by the standard deviation.

    Returns:
      Same type and shape as ``feats`` (float32), frames at or past ``n_frames`` set to 0.
    """
    xp = jnp if isinstance(feats, jax.Array) else np
    x = xp.asarray(feats, dtype=xp.float32)
    t = x.shape[-2]
    n = xp.full(x.shape[:-2], t) if n_frames is None else xp.asarray(n_frames)
    valid = (xp.arange(t) < n[..., None])[..., None]
    count = xp.maximum(n, 1)[..., None, None].astype(xp.float32)
    mean = xp.where(valid, x, 0.0).sum(axis=-2, keepdims=True) / count
    centered = xp.where(valid, x - mean, 0.0)
    if norm_means:
        x = x - mean
    if norm_vars:
        var = (centered**2).sum(axis=-2, keepdims=True) / count
        x = x / xp.sqrt(xp.maximum(var, UTTERANCE_VAR_FLOOR))
    return xp.where(valid, x, 0.0).astype(xp.float32)


class GlobalCMVN:
    """Corpus-level CMVN statistics accumulated over utterances (fairseq ``GlobalCMVN`` compatible).

    Accumulates float64 sums; ``std = sqrt(max(var, 1e-8))`` as in fairseq's
    ``cal_gcmvn_stats``. Saved ``.npz`` files hold ``mean`` and ``std`` (what
    fairseq reads) plus the raw sums so accumulation can resume after loading.
    """

    def __init__(self, dim: int | None = None):
        """Create empty statistics; ``dim`` is inferred from the first update if omitted."""
        self.count = 0
        self.sum = None if dim is None else np.zeros(dim, np.float64)
        self.sum_sq = None if dim is None else np.zeros(dim, np.float64)
        self._fixed: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, feats, n_frames: int | None = None) -> "GlobalCMVN":
        """Add the first ``n_frames`` (default all) frames of a [T, D] feature matrix."""
        x = np.asarray(feats, np.float64)
        if x.ndim != 2:
            raise ValueError(f"GlobalCMVN.update expects [frames, dim] features, got shape {x.shape}")
        x = x[: x.shape[0] if n_frames is None else int(n_frames)]
        if self.sum is None:
            self.sum, self.sum_sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        if x.shape[1] != self.sum.shape[0]:
            raise ValueError(f"GlobalCMVN.update: feature dim {x.shape[1]} != {self.sum.shape[0]}")
        self.sum += x.sum(axis=0)
        self.sum_sq += (x**2).sum(axis=0)
        self.count += x.shape[0]
        self._fixed = None
        return self

    @property
    def mean(self) -> np.ndarray:
        """Per-dimension mean (float32)."""
        if self._fixed is not None:
            return self._fixed[0]
        if not self.count:
            raise ValueError("GlobalCMVN has no statistics; call update() first")
        return (self.sum / self.count).astype(np.float32)

    @property
    def std(self) -> np.ndarray:
        """Per-dimension standard deviation, variance floored at 1e-8 (float32)."""
        if self._fixed is not None:
            return self._fixed[1]
        if not self.count:
            raise ValueError("GlobalCMVN has no statistics; call update() first")
        mean = self.sum / self.count
        var = self.sum_sq / self.count - mean**2
        return np.sqrt(np.maximum(var, GLOBAL_VAR_FLOOR)).astype(np.float32)

    def apply(self, feats):
        """Normalize ``feats`` [..., D] (numpy or JAX) as ``(x - mean) / std``."""
        xp = jnp if isinstance(feats, jax.Array) else np
        return ((xp.asarray(feats, dtype=xp.float32) - self.mean) / self.std).astype(xp.float32)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``mean``, ``std``, ``sum``, ``sum_sq`` and ``count`` to an ``.npz`` file."""
        arrays = dict(mean=self.mean, std=self.std)
        if self.count:
            arrays.update(sum=self.sum, sum_sq=self.sum_sq, count=np.int64(self.count))
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GlobalCMVN":
        """Read statistics saved by :meth:`save` or a fairseq ``.npz`` holding only ``mean``/``std``."""
        with np.load(path) as data:
            stats = cls()
            if "count" in data:
                stats.sum, stats.sum_sq = data["sum"].astype(np.float64), data["sum_sq"].astype(np.float64)
                stats.count = int(data["count"])
            elif "mean" in data and "std" in data:
                stats._fixed = (data["mean"].astype(np.float32), data["std"].astype(np.float32))
            else:
                raise ValueError(f"{path}: not a CMVN statistics file (needs mean/std or sum/sum_sq/count)")
        return stats


def normalize_waveform(w: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance: `(w - mean) / sqrt(var + 1e-7)`, HF `Wav2Vec2FeatureExtractor`'s
    `zero_mean_unit_var_norm` (`do_normalize=True`, as the wav2vec 2.0 large/LV-60 models expect)."""
    return (w - w.mean()) / np.sqrt(w.var() + WAVEFORM_VAR_EPS)
