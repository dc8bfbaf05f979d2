"""SpecAugment frequency and time masking with fairseq's ``SpecAugmentTransform`` semantics (numpy).

For a ``[T, D]`` spectrogram (the first ``n_frames`` rows of a padded one):

* ``mask_value`` None (fairseq's default when the data config gives none) means the mean of the
  spectrogram, taken before any mask is drawn;
* nothing happens when ``T == 0`` or ``D < freq_mask_f``;
* ``freq_mask_n`` times: width ``f ~ U{0, .., F - 1}``, start ``f0 ~ U{0, .., D - f - 1}``;
  columns ``[f0, f0 + f)`` get the mask value;
* time masks are capped at ``T' = min(time_mask_t, floor(T * time_mask_p))``; none when ``T' < 1``;
  ``time_mask_n`` times: ``t ~ U{0, .., T' - 1}``, ``t0 ~ U{0, .., T - t - 1}``; rows ``[t0, t0 + t)``.

Frequency masks are drawn before time masks, each as (width, start), so a generator seeded alike gives
the same masks as fairseq's calls to ``np.random.randint``. Time warping is not implemented (every
fairseq policy sets ``time_wrap_W = 0``).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["SpecAugment", "POLICIES", "get_policy"]


@dataclasses.dataclass(frozen=True)
class SpecAugment:
    """SpecAugment masking parameters (fairseq's ``freq_mask_N/F``, ``time_mask_N/T/p``, ``mask_value``)."""

    freq_mask_n: int = 0
    freq_mask_f: int = 0
    time_mask_n: int = 0
    time_mask_t: int = 0
    time_mask_p: float = 0.0
    mask_value: float | None = None

    def __post_init__(self):
        if self.freq_mask_n > 0 and self.freq_mask_f <= 0:
            raise ValueError(f"freq_mask_f ({self.freq_mask_f}) must be > 0 when freq_mask_n > 0")
        if self.time_mask_n > 0 and self.time_mask_t <= 0:
            raise ValueError(f"time_mask_t ({self.time_mask_t}) must be > 0 when time_mask_n > 0")

    def masks(self, n_frames: int, n_freqs: int, rng: np.random.Generator):
        """Draws ``(freq_masks, time_masks)`` as lists of ``(start, width)`` for a ``[n_frames, n_freqs]`` input.

        Zero-width masks are kept in the lists (they change nothing), so the number of draws is fixed.
        """
        if n_frames == 0 or n_freqs < self.freq_mask_f:
            return [], []
        freq = []
        for _ in range(self.freq_mask_n):
            f = int(rng.integers(0, self.freq_mask_f))
            freq.append((int(rng.integers(0, n_freqs - f)), f))
        max_t = min(self.time_mask_t, math.floor(n_frames * self.time_mask_p))
        time = []
        if max_t >= 1:
            for _ in range(self.time_mask_n):
                t = int(rng.integers(0, max_t))
                time.append((int(rng.integers(0, n_frames - t)), t))
        return freq, time

    def __call__(self, feats: np.ndarray, rng: np.random.Generator, n_frames: int | None = None) -> np.ndarray:
        """Returns a masked copy of ``feats`` [T, D]; only the first ``n_frames`` rows (default all) are used.

        Rows at or past ``n_frames`` are returned unchanged and do not enter the mask value.
        """
        x = np.array(feats, copy=True)
        if x.ndim != 2:
            raise ValueError(f"SpecAugment expects a [frames, freqs] spectrogram, got shape {x.shape}")
        n = x.shape[0] if n_frames is None else int(n_frames)
        valid = x[:n]
        freq, time = self.masks(n, x.shape[1], rng)
        if not (freq or time):
            return x
        value = float(valid.mean()) if self.mask_value is None else self.mask_value
        for f0, f in freq:
            valid[:, f0 : f0 + f] = value
        for t0, t in time:
            valid[t0 : t0 + t, :] = value
        return x

    def batch(self, feats: np.ndarray, n_frames, rng: np.random.Generator) -> np.ndarray:
        """Masks each utterance of a padded ``[B, T, D]`` batch within its own ``n_frames[b]`` rows."""
        out = np.array(feats, copy=True)
        for b, n in enumerate(np.asarray(n_frames)):
            out[b] = self(out[b], rng, int(n))
        return out


POLICIES = {
    "lb": SpecAugment(freq_mask_n=1, freq_mask_f=27, time_mask_n=1, time_mask_t=100, time_mask_p=1.0),
    "ld": SpecAugment(freq_mask_n=2, freq_mask_f=27, time_mask_n=2, time_mask_t=100, time_mask_p=1.0),
    "sm": SpecAugment(freq_mask_n=2, freq_mask_f=15, time_mask_n=2, time_mask_t=70, time_mask_p=0.2),
    "ss": SpecAugment(freq_mask_n=2, freq_mask_f=27, time_mask_n=2, time_mask_t=70, time_mask_p=0.2),
}


def get_policy(policy: str | SpecAugment | None) -> SpecAugment | None:
    """Resolves a fairseq policy name (``lb``, ``ld``, ``sm``, ``ss``), a :class:`SpecAugment` or None."""
    if policy is None or isinstance(policy, SpecAugment):
        return policy
    if policy not in POLICIES:
        raise ValueError(f"unknown SpecAugment policy {policy!r}; choose from {sorted(POLICIES)} or None")
    return POLICIES[policy]
