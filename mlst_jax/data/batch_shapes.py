"""The pipeline's settings and its static batch shapes: frame and token buckets, rows per batch, and the set of shapes
a training run compiles (see :mod:`mlst_jax.data.pipeline` for what each setting does)."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from mlst_jax.audio.fbank import NUM_MEL_BINS
from mlst_jax.audio.specaugment import get_policy
from mlst_jax.data.source_meta import FEATURES, STEP_UNITS
from mlst_jax.data.vocab import UNK_ID

__all__ = ["PipelineConfig", "BatchShape", "batch_shape", "train_frame_buckets", "static_batch_shapes",
           "DEFAULT_FRAME_BUCKETS", "DEFAULT_TOKEN_BUCKETS"]

DEFAULT_FRAME_BUCKETS = tuple(range(128, 3073, 128))
DEFAULT_TOKEN_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Input pipeline settings (defaults: fairseq's MuST-C multilingual recipe).

    ``langs`` orders the streams (ids in batches); empty means the sorted source keys. ``targets`` gives the
    target language of each stream of ``langs`` (empty: the stream names are target languages).
    ``temperature`` is 1 for proportional sampling, larger flattens, ``inf`` is uniform. ``n_groups``
    (stratified batches) defaults to the number of streams. ``features`` is ``"fbank"``, ``"waveform"`` (raw
    16 kHz samples of audio sources, for wav2vec 2.0 encoders) or ``"text"`` (source tokens as the input, for
    text-to-text models); ``max_frames``, ``min_frames``, ``frame_buckets`` and ``max_frames_per_batch`` count
    feature steps: fbank frames, or samples for waveform features, or source tokens for text features.
    ``specaugment`` is a fairseq policy name or None (None for waveform and text features); ``cmvn`` is
    ``"utterance"``, ``"global"`` (statistics from ``global_cmvn_path``, a ``GlobalCMVN`` .npz; fbank only)
    or None (None for text features). ``source_tokens > 0``: batches carry the transcript as ``src_tokens`` of
    that length (speech features only). ``noise_streams``: streams whose training text batches get span
    masking (``noise_ratio`` of the pieces, Poisson(``noise_span``) span lengths, ``mask_id``).
    ``text_streams``: streams with text-only sources in a speech pipeline (needs ``source_tokens > 0``; training
    batches then carry ``speech``).
    ``num_epochs`` None repeats forever. ``on_bad_example``: ``"skip"`` turns an example that fails to load
    into a padding row (counted in ``stats.load_errors``), ``"raise"`` raises. ``worker_count`` grain
    worker processes (0: in-process), ``read_threads``/``prefetch`` grain's per-process reading threads and
    buffer (batches).
    """

    max_frames: int = 3000
    min_frames: int = 5
    frame_buckets: tuple[int, ...] = DEFAULT_FRAME_BUCKETS
    max_frames_per_batch: int = 40000
    max_tokens: int = 512
    token_buckets: tuple[int, ...] = DEFAULT_TOKEN_BUCKETS
    langs: tuple[str, ...] = ()
    temperature: float = 1.0
    stratify: bool = True
    n_groups: int | None = None
    specaugment: str | None = "ld"
    cmvn: str | None = "utterance"
    global_cmvn_path: str | None = None
    shuffle: bool = True
    seed: int = 0
    num_epochs: int | None = None
    on_bad_example: str = "skip"
    worker_count: int = 0
    read_threads: int = 2
    prefetch: int = 4
    ctc_max_chars: int = 0  # > 0: training batches carry the source transcript as CTC labels (mlst_jax.train.ctc)
    features: str = "fbank"
    targets: tuple[str, ...] = ()
    source_tokens: int = 0
    noise_streams: tuple[str, ...] = ()
    noise_ratio: float = 0.35
    noise_span: float = 2.0
    mask_id: int = UNK_ID
    text_streams: tuple[str, ...] = ()

    def __post_init__(self):
        if list(self.frame_buckets) != sorted(set(self.frame_buckets)) or not self.frame_buckets:
            raise ValueError(f"frame_buckets must be increasing, got {self.frame_buckets}")
        if list(self.token_buckets) != sorted(set(self.token_buckets)) or not self.token_buckets:
            raise ValueError(f"token_buckets must be increasing, got {self.token_buckets}")
        if self.max_frames > self.frame_buckets[-1]:
            raise ValueError(f"max_frames={self.max_frames} exceeds the largest frame bucket {self.frame_buckets[-1]}")
        if self.max_tokens > self.token_buckets[-1]:
            raise ValueError(f"max_tokens={self.max_tokens} exceeds the largest token bucket {self.token_buckets[-1]}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.cmvn not in ("utterance", "global", None):
            raise ValueError(f"cmvn must be 'utterance', 'global' or None, got {self.cmvn!r}")
        if self.features not in FEATURES:
            raise ValueError(f"features must be 'fbank', 'waveform' or 'text', got {self.features!r}")
        if self.features == "text":
            speech_only = dict(specaugment=None, cmvn=None, source_tokens=0, ctc_max_chars=0)
            for name, off in speech_only.items():
                if getattr(self, name) != off:
                    raise ValueError(f"{name}={getattr(self, name)!r} does not apply to features='text' (the source "
                                     f"tokens are the batch's input): set {name}={off!r}")
        elif self.noise_streams:
            raise ValueError(f"noise_streams={self.noise_streams} masks source tokens: it needs features='text'")
        if not 0 <= self.noise_ratio <= 1 or not self.noise_span > 0 or self.mask_id < 0:
            raise ValueError(f"noise_ratio must be in [0, 1] (got {self.noise_ratio}), noise_span > 0 (got "
                             f"{self.noise_span}) and mask_id >= 0 (got {self.mask_id})")
        if self.features == "waveform" and self.specaugment is not None:
            raise ValueError(f"specaugment={self.specaugment!r} masks fbank features; features='waveform' needs "
                             "specaugment=None")
        if self.features == "waveform" and self.cmvn == "global":
            raise ValueError("cmvn='global' applies to fbank features; waveform features take 'utterance' or None")
        if self.targets and len(self.targets) != len(self.langs):
            raise ValueError(f"targets {self.targets} must give the target language of each stream of langs "
                             f"{self.langs}")
        if self.source_tokens < 0:
            raise ValueError(f"source_tokens must be >= 0, got {self.source_tokens}")
        if self.text_streams and (self.features == "text" or self.source_tokens <= 0):
            raise ValueError(f"text_streams={self.text_streams} are text-only streams of a speech pipeline: they "
                             f"need features 'fbank' or 'waveform' and source_tokens > 0 (got features="
                             f"{self.features!r}, source_tokens={self.source_tokens})")
        if self.cmvn == "global" and not self.global_cmvn_path:
            raise ValueError("cmvn='global' needs global_cmvn_path (a GlobalCMVN .npz)")
        if self.ctc_max_chars < 0:
            raise ValueError(f"ctc_max_chars must be >= 0, got {self.ctc_max_chars}")
        if self.on_bad_example not in ("skip", "raise"):
            raise ValueError(f"on_bad_example must be 'skip' or 'raise', got {self.on_bad_example!r}")
        get_policy(self.specaugment)


class BatchShape(NamedTuple):
    """Shapes of a batch's ``features`` ([..., T, 80], or [..., N] for waveform features; ``src_tokens`` [..., T]
    for text features) and of its ``decoder_input``/``target``/``loss_weights``."""

    features: tuple[int, ...]
    tokens: tuple[int, ...]


def _bucket(n: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= n; past the last, n rounded up to a multiple of the first."""
    i = int(np.searchsorted(buckets, n))
    return buckets[i] if i < len(buckets) else -(-n // buckets[0]) * buckets[0]


def _rows(cfg: PipelineConfig, frames: int, n_groups: int, num_devices: int) -> int:
    """Rows of a ``frames``-bucket batch: the frame budget rounded down to whole rows per device and group."""
    multiple = n_groups * num_devices
    rows = cfg.max_frames_per_batch // frames // multiple * multiple
    if rows == 0:
        what = f"{n_groups} language groups x {num_devices} devices" if cfg.stratify else f"{num_devices} devices"
        unit, item = STEP_UNITS[cfg.features], "sentence" if cfg.features == "text" else "utterance"
        raise ValueError(f"max_frames_per_batch={cfg.max_frames_per_batch} cannot hold one {item} of {frames} "
                         f"{unit} for each of {what} ({multiple} rows, at least {frames * multiple} {unit}); the "
                         f"budget is per process: raise it with the process's batch devices, or lower max_frames")
    return rows


def _n_groups(cfg: PipelineConfig, langs: Sequence[str]) -> int:
    return (cfg.n_groups or len(langs)) if cfg.stratify else 1


def batch_shape(cfg: PipelineConfig, frames: int, tokens: int, *, num_devices: int = 1) -> BatchShape:
    """One process's batch shape for frame bucket ``frames`` and token length ``tokens`` (``cfg.langs`` set)."""
    if cfg.stratify and not (cfg.n_groups or cfg.langs):
        raise ValueError("batch_shape of a stratified pipeline needs cfg.langs (or cfg.n_groups)")
    return _shape(cfg, frames, tokens, _n_groups(cfg, cfg.langs), num_devices)


def _shape(cfg: PipelineConfig, frames: int, tokens: int, n_groups: int, num_devices: int) -> BatchShape:
    rows = _rows(cfg, frames, n_groups, num_devices)
    lead = (n_groups, rows // n_groups) if cfg.stratify else (rows,)
    return _batch_shape(cfg, lead, frames, tokens)


def _batch_shape(cfg: PipelineConfig, lead: tuple[int, ...], frames: int, tokens: int) -> BatchShape:
    features = (*lead, frames) if cfg.features in ("waveform", "text") else (*lead, frames, NUM_MEL_BINS)
    return BatchShape(features, (*lead, tokens))


def train_frame_buckets(cfg: PipelineConfig) -> list[int]:
    """The frame buckets training batches can use: up to the one holding ``max_frames``."""
    return list(cfg.frame_buckets[: int(np.searchsorted(cfg.frame_buckets, cfg.max_frames)) + 1])


def static_batch_shapes(cfg: PipelineConfig, *, num_devices: int = 1, frames: Sequence[int] | None = None,
                        tokens: int | None = None) -> list[BatchShape]:
    """Every shape a training pipeline over any data can yield, without reading data: one per frame bucket up
    to the one holding ``max_frames`` (or per bucket in ``frames``), each at the token bucket holding ``tokens``
    (default ``max_tokens``, the longest possible); the data decide which shapes are used and with how many
    tokens (:meth:`Pipeline.batch_shapes`)."""
    buckets = train_frame_buckets(cfg)
    if frames is not None:
        unknown = [t for t in frames if t not in buckets]
        if unknown:
            raise ValueError(f"frames {unknown} are not frame buckets up to max_frames={cfg.max_frames}: {buckets}")
        buckets = sorted(set(frames))
    if tokens is not None and not 0 < tokens <= cfg.max_tokens:
        raise ValueError(f"tokens={tokens} must be in [1, max_tokens={cfg.max_tokens}]")
    u = _bucket(cfg.max_tokens if tokens is None else tokens, cfg.token_buckets)
    return [batch_shape(cfg, t, u, num_devices=num_devices) for t in buckets]
