"""Grain input pipeline for multilingual speech translation with a small fixed set of batch shapes.

fairseq's multilingual speech-to-text recipe, made static-shape for XLA:

* **Streams.** One source per stream. By default a stream is named by its target language (``{"de": MuST-C
  en-de, ...}``); with ``targets``, streams have any names (e.g. translation directions ``"de-en"``,
  ``"fr-en"``) and ``targets[i]`` is the target language of stream ``langs[i]`` (streams may share one).
  Targets start with their target language's tag. Sampling, stratification, statistics and the ids in
  batches are per stream (fairseq samples language pairs); ids index ``pipeline.langs``.
* **Metadata.** Every source (TFDS ``as_data_source`` or any sequence of example dicts holding
  ``tgt_text``, ``tgt_lang`` and ``audio`` int16 16 kHz or ``fbank`` float16 [frames, 80]) is scanned once
  for feature steps and target token counts (:func:`scan_source`; pass the results as ``metadata=`` to skip
  the scan, e.g. cached with :meth:`SourceMeta.save`). With ``features="text"`` (text-to-text models:
  mBART denoising and MT) only ``src_text``, ``src_lang``, ``tgt_text`` and ``tgt_lang`` are read (an
  ``audio``/``fbank`` field is not read; text-only sources: :mod:`mlst_jax.data.text_sources`).
* **Text streams.** With speech features and ``source_tokens > 0``, the streams in ``text_streams`` have
  text-only sources (no ``audio``/``fbank``, e.g. :func:`~mlst_jax.data.text_sources.read_bitext`): extra MT
  data beside the speech (joint speech-text training, MT on ``src_tokens``). They are scanned with
  ``scan_source(..., text_only=True)`` (kind ``"text"``, 0 feature steps), filtered on targets and sources
  only, sampled like any stream and planned in the smallest frame bucket, where their rows fill the batches of
  the shortest utterances. Training only: evaluation sources hold audio.
* **Feature steps**: fbank frames, or samples for waveform features, or source tokens for text features.
  With ``features="fbank"`` audio lengths count Kaldi frames (25 ms window, 10 ms shift); with
  ``features="waveform"`` (audio sources only) they count 16 kHz samples; with ``features="text"`` they count
  ``len(vocab.encode(src_text, src_lang))`` (source tag and ``</s>`` included); ``max_frames``,
  ``min_frames``, ``frame_buckets`` and ``max_frames_per_batch`` count the same unit. :class:`SourceMeta`
  records which unit it counts.
* **Filtering** (training only, as fairseq's data prep): more than ``max_frames`` or fewer than
  ``min_frames`` feature steps (not on text streams), empty targets, targets longer than ``max_tokens``; with
  ``source_tokens``, empty transcripts and transcripts longer than ``source_tokens`` tokens; with text features,
  empty sources (``empty_source``: only the tag and ``</s>``). Every drop is counted per stream and reason in
  ``pipeline.stats`` and logged.
* **Temperature sampling.** Each epoch draws ``round(p_l * N)`` examples of stream ``l``, ``p_l ∝
  n_l^(1/T)`` (fairseq's ``ResamplingDataset`` sizes): without replacement when a stream shrinks, as
  whole copies plus a draw without replacement for the remainder when it grows. Draws are made per
  (stream, frame bucket) cell in proportion to the cell's size, which keeps the number of batches per
  epoch fixed. ``T = 1`` uses every example exactly once per epoch.
* **Static shapes.** Each example goes to the smallest frame bucket holding it. A bucket's batch holds
  ``B = floor(max_frames_per_batch / T_bucket)`` rows rounded down so that every device gets the same
  number of rows of every group (stratified: ``b = B / n_groups`` a multiple of ``num_devices``; otherwise
  ``B`` a multiple of ``num_devices``); its token length is the smallest token bucket holding the longest
  target in that frame bucket. So there is one shape per used frame bucket (:meth:`Pipeline.batch_shapes`).
* **Stratified batches.** With ``stratify=True`` a batch is ``[n_groups, b, ...]``, each group holding
  examples of a single stream, with ``group_lang`` [n_groups]; otherwise ``[B, ...]`` with a per-row
  ``lang``.
* **Features.** fbank sources are read as stored; audio sources go through the jitted ``fbank_batch``
  (on the CPU backend) in chunks of ``FBANK_ROWS`` real rows at the bucket's padded length (one compilation
  per frame bucket). Then utterance CMVN (default) or global CMVN, then SpecAugment on training batches
  (fairseq's transform order). Waveform features are the samples / 32768; ``cmvn="utterance"`` is HF
  ``Wav2Vec2FeatureExtractor``'s ``do_normalize`` over each utterance's samples (``(w - mean) / sqrt(var +
  1e-7)``), None leaves them as they are; no global CMVN or SpecAugment. Text features have no CMVN,
  SpecAugment, CTC labels or ``source_tokens`` (the source tokens are the input).
* **Denoising.** Training text batches of the streams in ``noise_streams`` get mBART's span masking of the
  source pieces (between the tag and ``</s>``, which are kept): spans of Poisson(``noise_span``) pieces (at
  least 1) at random starts until ``noise_ratio`` of the pieces (rounded) are covered, each run of covered
  pieces replaced by one ``mask_id``; ``feature_lengths`` counts the noised source. Evaluation batches are
  never noised.
* **Multi-host.** All processes build the same global plan (same shapes at every step); process ``s`` of
  ``shard_count`` reads rows ``[s·b, (s+1)·b)`` of every global group, so processes see disjoint examples.
  ``max_frames_per_batch`` bounds each process's batch. Batches do not depend on how the global batch is split
  over processes (see *Checkpointing* for SpecAugment and denoising).
* **Checkpointing.** The plan is a grain ``MapDataset`` over batch indices, so the iterator's state is
  grain's own (``get_state``/``set_state``); SpecAugment and denoising draw from generators seeded by (seed,
  batch index, row of the global batch), so a restored iterator yields the same batches, whatever the number
  of processes. ``worker_count > 0`` adds grain worker processes (``mp_prefetch``).

Batch dict: ``features`` float32 [..., T, 80] (fbank) or [..., N] (waveform), zero past each length,
``feature_lengths`` int32 (feature steps), ``decoder_input`` int32 ``[</s>, tag, tokens...]`` padded with
``<pad>``, ``target`` int32 ``[tag, tokens..., </s>]``, ``loss_weights`` float32 (0 at padding and at the
tag), ``valid`` int32 (0 for rows that only fill the shape), ``index`` int32 (row's example index in its
source, -1 for padding), and ``group_lang`` [n_groups] or ``lang`` [B] int32. With ``ctc_max_chars > 0``,
training batches also carry the source transcript (``src_text``) as ``ctc_labels`` int32 [...,
ctc_max_chars] with ``ctc_label_paddings`` float32 (1 past the transcript; all 1 for a transcript longer than
``ctc_max_chars``, counted in ``stats.ctc_too_long``). With ``source_tokens > 0``, batches carry
``src_tokens`` int32 [..., source_tokens]: ``vocab.encode(src_text, src_lang)`` (``[source tag, pieces...,
</s>]``, mBART's source layout) padded with ``<pad>`` (padding rows all ``<pad>``); evaluation keeps every
example and cuts a longer transcript to its first ``source_tokens - 1`` tokens plus ``</s>`` (counted in
``stats.src_truncated``). With ``text_streams``, training batches carry ``speech`` int32 [...] (1: the row has
audio; 0: a text stream's row or a padding row); text rows have ``features`` all 0, ``feature_lengths`` 0 and
no CTC labels (``ctc_label_paddings`` all 1), and their ``src_tokens``, targets, ``valid``, ``index`` and
stream ids as any row; speech rows are as without text streams.

Text batches (``features="text"``) have no ``features``: ``src_tokens`` int32 [..., T] (T the frame bucket)
holds ``vocab.encode(src_text, src_lang)`` (noised on ``noise_streams``) padded with ``<pad>`` (padding rows
all ``<pad>``), ``feature_lengths`` its token counts; the other keys are as above.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import sys
import threading
from typing import Any, Mapping, NamedTuple, Sequence

import grain
import numpy as np

from mlst_jax.audio.cmvn import GlobalCMVN, normalize_waveform, utterance_cmvn
from mlst_jax.audio.fbank import FRAME_LENGTH, FRAME_SHIFT, NUM_MEL_BINS, num_frames
from mlst_jax.audio.specaugment import get_policy
from mlst_jax.data.ctc_labels import char_labels
from mlst_jax.data.source_meta import (
    FEATURES,
    STEP_UNITS,
    SourceMeta,
    _read,
    _source_ids,
    _text,
    scan_source,
)
from mlst_jax.data.vocab import EOS_ID, PAD_ID, UNK_ID

__all__ = [
    "PipelineConfig", "SourceMeta", "PipelineStats", "BatchShape", "Pipeline", "scan_source", "language_probs",
    "epoch_sizes", "batch_shape", "train_frame_buckets", "static_batch_shapes", "make_train_pipeline",
    "make_eval_pipeline",
]

logger = logging.getLogger(__name__)

DEFAULT_FRAME_BUCKETS = tuple(range(128, 3073, 128))
DEFAULT_TOKEN_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
DROP_REASONS = ("too_long", "too_short", "empty_target", "target_too_long")
SOURCE_DROP_REASONS = ("empty_source", "source_too_long")  # with source_tokens > 0
FBANK_ROWS = 8


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


@dataclasses.dataclass
class PipelineStats:
    """Examples kept and dropped (per stream and reason), per-epoch sample sizes, and load errors.

    Load errors, transcripts too long for CTC labels and truncated source tokens are counted in the process
    that reads the data (not visible from grain worker processes).
    """

    kept: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped_by_lang: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
    epoch_examples: dict[str, int] = dataclasses.field(default_factory=dict)
    load_errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    ctc_too_long: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    src_truncated: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def dropped(self) -> collections.Counter:
        """Dropped examples per reason, all streams together."""
        return sum(self.dropped_by_lang.values(), collections.Counter())

    def summary(self) -> str:
        """One line per stream: kept, dropped per reason, examples per epoch."""
        lines = []
        for lang in self.kept:
            drops = ", ".join(f"{r}={c}" for r, c in sorted(self.dropped_by_lang.get(lang, {}).items()) if c) or "none"
            per_epoch = f", {self.epoch_examples[lang]} per epoch" if lang in self.epoch_examples else ""
            lines.append(f"{lang}: kept {self.kept[lang]}, dropped {drops}{per_epoch}")
        if self.ctc_too_long:
            lines.append("transcripts too long for CTC labels (no CTC loss on them): "
                         + ", ".join(f"{l}={n}" for l, n in sorted(self.ctc_too_long.items())))
        if self.src_truncated:
            lines.append("source tokens truncated: "
                         + ", ".join(f"{l}={n}" for l, n in sorted(self.src_truncated.items())))
        return "\n".join(lines)


def language_probs(sizes, temperature: float) -> np.ndarray:
    """Sampling probabilities ``p_l ∝ n_l^(1/T)`` (``T = inf``: uniform)."""
    sizes = np.asarray(sizes, np.float64)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if sizes.size == 0 or np.any(sizes <= 0):
        raise ValueError(f"every language needs examples to sample from, got sizes {sizes.tolist()}")
    p = sizes ** (0.0 if math.isinf(temperature) else 1.0 / temperature)
    return p / p.sum()


def epoch_sizes(sizes, temperature: float) -> np.ndarray:
    """Examples drawn per language and epoch: ``round(p_l * sum(n))``."""
    return np.round(language_probs(sizes, temperature) * np.sum(sizes)).astype(np.int64)


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


def _draw(ids: np.ndarray, m: int, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
    q, r = divmod(m, len(ids))
    out = np.concatenate([np.tile(ids, q), ids[rng.choice(len(ids), r, replace=False)]])
    return rng.permutation(out) if shuffle else np.sort(out)


def _pad(rows: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([rows, np.full(size - len(rows), -1, rows.dtype)])


def _span_mask(ids: np.ndarray, rng: np.random.Generator, ratio: float, span: float, mask_id: int) -> np.ndarray:
    """mBART's span masking of ``[tag, pieces..., </s>]``: spans of Poisson(``span``) pieces (at least 1, the
    last one cut to fit) from random unmasked starts until ``floor(ratio * pieces + 0.5)`` pieces are covered;
    every run of covered pieces becomes one ``mask_id``."""
    pieces = ids[1:-1]
    covered = np.zeros(len(pieces), bool)
    goal = int(math.floor(ratio * len(pieces) + 0.5))
    while (left := goal - int(covered.sum())) > 0:
        start = int(rng.choice(np.flatnonzero(~covered)))
        covered[start : start + min(max(1, int(rng.poisson(span))), left)] = True
    first = covered & ~np.concatenate([[False], covered[:-1]])
    return np.concatenate([ids[:1], np.where(first, mask_id, pieces)[~covered | first], ids[-1:]])


class _TrainPlan:
    """Global batch index -> the rows this process loads (lazily planned epochs)."""

    def __init__(self, cells, shapes, offsets, cfg: PipelineConfig, n_groups, rows_local, shard_index, shard_count):
        self.cells, self.shapes, self.offsets = cells, shapes, offsets
        self.stratify, self.shuffle, self.seed = cfg.stratify, cfg.shuffle, cfg.seed
        self.n_groups, self.rows_local = n_groups, rows_local
        self.shard_index, self.shard_count = shard_index, shard_count
        self.steps_per_epoch = 0
        for k, cell in cells.items():
            width = rows_local[k] * shard_count
            if self.stratify:
                chunks = sum(-(-m // width) for _, _, m in cell)
                self.steps_per_epoch += -(-chunks // n_groups)
            else:
                self.steps_per_epoch += -(-sum(m for _, _, m in cell) // (width * n_groups))
        self._cache: dict[int, list] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state, _cache={}, _lock=threading.Lock())

    def epoch(self, e: int) -> list:
        """Batches of epoch ``e``: ``(bucket, group langs [G] or None, global example ids [G, b] or [B])``."""
        with self._lock:
            if e not in self._cache:
                if len(self._cache) >= 2:
                    self._cache.pop(min(self._cache))
                self._cache[e] = self._plan(e)
            return self._cache[e]

    def _plan(self, e: int) -> list:
        rng = np.random.default_rng([self.seed, e])
        batches = []
        for k, cell in self.cells.items():
            width = self.rows_local[k] * self.shard_count
            if self.stratify:
                chunks = []
                for lang, ids, m in cell:
                    drawn = _draw(ids, m, rng, self.shuffle)
                    chunks += [(lang, _pad(drawn[i : i + width], width)) for i in range(0, m, width)]
                if self.shuffle:
                    chunks = [chunks[i] for i in rng.permutation(len(chunks))]
                for i in range(0, len(chunks), self.n_groups):
                    group = chunks[i : i + self.n_groups]
                    group += [(group[0][0], np.full(width, -1, np.int64))] * (self.n_groups - len(group))
                    batches.append((k, np.array([g[0] for g in group], np.int32), np.stack([g[1] for g in group])))
            else:
                drawn = np.concatenate([_draw(ids, m, rng, self.shuffle) for _, ids, m in cell])
                if self.shuffle:
                    drawn = rng.permutation(drawn)
                size = width * self.n_groups
                batches += [(k, None, _pad(drawn[i : i + size], size)) for i in range(0, len(drawn), size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        assert len(batches) == self.steps_per_epoch
        return batches

    def __call__(self, index: int) -> dict:
        e, j = divmod(int(index), self.steps_per_epoch)
        k, group_lang, gids = self.epoch(e)[j]
        b = self.rows_local[k]
        if self.stratify:
            width = gids.shape[1]
            gids = gids[:, self.shard_index * b : (self.shard_index + 1) * b]
            row_lang = np.repeat(group_lang, b).reshape(gids.shape)
            row = np.arange(len(gids))[:, None] * width + self.shard_index * b + np.arange(b)
        else:
            gids = gids.reshape(self.shard_count, -1)[self.shard_index]
            row_lang = np.maximum(np.searchsorted(self.offsets, gids, side="right") - 1, 0).astype(np.int32)
            row = self.shard_index * len(gids) + np.arange(len(gids))
        slot = np.where(gids >= 0, row_lang, -1)
        return dict(index=int(index), shape=self.shapes[k], group_lang=group_lang, slot=slot,
                    lang=row_lang.astype(np.int32), example=np.where(gids >= 0, gids - self.offsets[row_lang], -1),
                    row=row.reshape(-1))


class _BatchLoader:
    """Reads a planned batch's examples and builds its arrays (features, CMVN, SpecAugment, tokens).

    ``langs`` names the streams (rows' ``lang`` ids index it), ``targets`` their target languages (default:
    ``langs``). A spec with ``references`` (multi-way batches: ``references[k][row]`` is the row's encoded
    target in stream ``k``) gets ``[n_streams, rows, U]`` targets from it instead of the examples' own.
    In training, rows of ``cfg.text_streams`` are text-only (no features) and batches carry ``speech``.
    """

    def __init__(self, sources: list, kinds: list[str], vocab, langs: list[str], cfg: PipelineConfig, train: bool,
                 shard_index: int, stats: PipelineStats, targets: Sequence[str] | None = None):
        self.sources, self.kinds, self.vocab, self.langs = sources, kinds, vocab, langs
        self.targets = list(targets or langs)
        self.waveform, self.text = cfg.features == "waveform", cfg.features == "text"
        self.cmvn = cfg.cmvn
        self.global_cmvn = GlobalCMVN.load(cfg.global_cmvn_path) if cfg.cmvn == "global" else None
        self.specaugment = get_policy(cfg.specaugment) if train else None
        self.seed, self.shard_index, self.on_bad = cfg.seed, shard_index, cfg.on_bad_example
        self.stats = stats
        self.train, self.ctc_max_chars, self.source_tokens = train, cfg.ctc_max_chars, cfg.source_tokens
        self.noise = {i for i, l in enumerate(langs) if l in cfg.noise_streams} if train and self.text else set()
        self.noise_ratio, self.noise_span, self.mask_id = cfg.noise_ratio, cfg.noise_span, cfg.mask_id
        self.mark_speech = train and bool(cfg.text_streams)
        self.text_streams = [i for i, l in enumerate(langs) if l in cfg.text_streams] if self.mark_speech else []

    def __call__(self, spec: dict) -> dict[str, np.ndarray]:
        shape, refs = spec["shape"], spec.get("references")
        lead, u = shape.tokens[:-1], shape.tokens[-1]
        t = shape.features[len(lead)]
        slot, example, lang = spec["slot"].reshape(-1), spec["example"].reshape(-1), spec["lang"].reshape(-1)
        r = slot.size
        feats = None if self.text else np.zeros((r, *shape.features[len(lead):]), np.float32)
        lengths, samples = np.zeros(r, np.int32), np.zeros(r, np.int32)
        waves = None
        n_tgt = 1 if refs is None else len(refs)
        dec, tgt = np.full((n_tgt, r, u), PAD_ID, np.int32), np.full((n_tgt, r, u), PAD_ID, np.int32)
        weights = np.zeros((n_tgt, r, u), np.float32)
        valid = np.zeros(r, np.int32)
        n_ctc = self.ctc_max_chars if self.train else 0
        ctc_labels, ctc_pad = np.zeros((r, n_ctc), np.int32), np.ones((r, n_ctc), np.float32)
        n_src = t if self.text else self.source_tokens
        src_tokens = np.full((r, n_src), PAD_ID, np.int32)
        text_rows = (slot >= 0) & np.isin(lang, self.text_streams)
        for s in np.unique(slot[slot >= 0]):
            rows = np.flatnonzero(slot == s)
            for row, ex in zip(rows, _read(self.sources[s], example[rows])):
                try:
                    if refs is None:
                        ids = [self.vocab.encode(_text(ex["tgt_text"]), self.targets[lang[row]])]
                        if len(ids[0]) > u:
                            raise ValueError(f"target of {len(ids[0])} tokens exceeds the batch's {u}")
                    else:
                        ids = [refs[k][row] for k in range(n_tgt)]
                    src = self._source(ex, lang[row]) if self.source_tokens else []
                    if text_rows[row]:
                        pass  # no features: feature_lengths 0
                    elif self.text:
                        src = _source_ids(self.vocab, ex)
                        if len(src) > t:
                            raise ValueError(f"source of {len(src)} tokens exceeds the batch's {t}")
                        lengths[row] = len(src)
                    elif self.waveform:
                        pcm = np.asarray(ex["audio"])[:t]
                        if not len(pcm):
                            raise ValueError("no samples")
                        feats[row, : len(pcm)], lengths[row] = pcm.astype(np.float32) / 32768.0, len(pcm)
                    elif self.kinds[s] == "audio":
                        pcm = np.asarray(ex["audio"])[: FRAME_LENGTH + (t - 1) * FRAME_SHIFT]
                        if len(pcm) < FRAME_LENGTH:
                            raise ValueError(f"{len(pcm)} samples, fewer than one frame")
                        if waves is None:
                            waves = np.zeros((r, FRAME_LENGTH + (t - 1) * FRAME_SHIFT), np.float32)
                        waves[row, : len(pcm)] = pcm.astype(np.float32) / 32768.0
                        lengths[row], samples[row] = num_frames(len(pcm)), len(pcm)
                    else:
                        fb = np.asarray(ex["fbank"], np.float32)[:t]
                        feats[row, : len(fb)], lengths[row] = fb, len(fb)
                except Exception as e:
                    if self.on_bad == "raise":
                        raise ValueError(f"{self.langs[lang[row]]} example {example[row]}: {e}") from e
                    self.stats.load_errors[self.langs[lang[row]]] += 1
                    logger.warning("skipping %s example %d: %s", self.langs[lang[row]], example[row], e)
                    lengths[row] = samples[row] = 0
                    continue
                valid[row] = 1
                if n_ctc and not text_rows[row]:
                    self._ctc(ex, row, lang[row], ctc_labels, ctc_pad)
                src_tokens[row, : len(src)] = src
                for k, target in enumerate(ids):
                    tgt[k, row, : len(target)] = target
                    dec[k, row, : len(target)] = [EOS_ID] + target[:-1]
                    weights[k, row, 1 : len(target)] = 1.0
        if waves is not None:
            audio_rows = np.flatnonzero((samples > 0) & (valid == 1))
            for i in range(0, len(audio_rows), FBANK_ROWS):
                chunk = audio_rows[i : i + FBANK_ROWS]
                w, n = np.zeros((FBANK_ROWS, waves.shape[1]), np.float32), np.zeros(FBANK_ROWS, np.int32)
                w[: len(chunk)], n[: len(chunk)] = waves[chunk], samples[chunk]
                feats[chunk] = _fbank_cpu(w, n)[: len(chunk)]
        lengths *= valid
        if not self.text:
            feats = self._normalize(feats, lengths)
        if self.specaugment is not None:
            # one generator per global row: independent of the process count
            for row in np.flatnonzero(valid & ~text_rows):
                rng = np.random.default_rng([self.seed, 1, spec["index"], int(spec["row"][row])])
                feats[row] = self.specaugment(feats[row], rng, lengths[row])
        for row in np.flatnonzero(valid & np.isin(lang, sorted(self.noise))):  # per global row, as SpecAugment
            rng = np.random.default_rng([self.seed, 2, spec["index"], int(spec["row"][row])])
            noised = _span_mask(src_tokens[row, : lengths[row]], rng, self.noise_ratio, self.noise_span, self.mask_id)
            src_tokens[row], lengths[row] = PAD_ID, len(noised)
            src_tokens[row, : len(noised)] = noised
        tokens = (*lead, u) if refs is None else (n_tgt, *lead, u)
        out = {} if self.text else dict(features=feats.reshape(*lead, *feats.shape[1:]))
        out.update(feature_lengths=lengths.reshape(lead), decoder_input=dec.reshape(tokens),
                   target=tgt.reshape(tokens), loss_weights=weights.reshape(tokens), valid=valid.reshape(lead),
                   index=np.where(valid == 1, example, -1).astype(np.int32).reshape(lead))
        if self.mark_speech:
            out["speech"] = (valid & ~text_rows).astype(np.int32).reshape(lead)
        if n_ctc:
            out.update(ctc_labels=ctc_labels.reshape(*lead, n_ctc), ctc_label_paddings=ctc_pad.reshape(*lead, n_ctc))
        if n_src:
            out["src_tokens"] = src_tokens.reshape(*lead, n_src)
        if spec["group_lang"] is not None:
            out["group_lang"] = spec["group_lang"]
        elif refs is None:
            out["lang"] = lang.astype(np.int32)
        return out

    def _normalize(self, feats: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        if self.waveform:
            out = np.zeros_like(feats)
            for row in np.flatnonzero(lengths):
                w = feats[row, : lengths[row]]
                out[row, : len(w)] = normalize_waveform(w) if self.cmvn else w
            return out
        if self.cmvn == "utterance":
            return utterance_cmvn(feats, lengths)
        if self.cmvn == "global":
            feats = self.global_cmvn.apply(feats)
        return np.where((np.arange(feats.shape[1]) < lengths[:, None])[..., None], feats, 0.0).astype(np.float32)

    def _source(self, ex, lang: int) -> list[int]:
        """The row's transcript as source tokens; longer than source_tokens: an error in training (such
        examples are filtered out), cut to ``[tag, pieces..., </s>]`` of source_tokens in evaluation (counted)."""
        ids = _source_ids(self.vocab, ex)
        if len(ids) <= self.source_tokens:
            return ids
        if self.train:
            raise ValueError(f"transcript of {len(ids)} tokens exceeds source_tokens={self.source_tokens}")
        self.stats.src_truncated[self.langs[lang]] += 1
        return ids[: self.source_tokens - 1] + [EOS_ID]

    def _ctc(self, ex, row: int, lang: int, labels: np.ndarray, paddings: np.ndarray) -> None:
        """The row's source transcript as CTC labels; a transcript longer than ctc_max_chars gets none (counted)."""
        if "src_text" not in ex:
            raise ValueError("CTC labels need the source transcript, but the example has no 'src_text' "
                             f"(keys: {sorted(ex)})")
        ids = char_labels(_text(ex["src_text"]))
        if len(ids) > labels.shape[1]:
            self.stats.ctc_too_long[self.langs[lang]] += 1
            return
        labels[row, : len(ids)] = ids
        paddings[row, : len(ids)] = 0.0


def _fbank_cpu(waves: np.ndarray, n_samples: np.ndarray) -> np.ndarray:
    import jax

    from mlst_jax.audio.fbank import fbank_batch

    with jax.default_device(jax.local_devices(backend="cpu")[0]):  # process-local in multi-process runs
        feats, _ = fbank_batch(waves, n_samples)
        return np.asarray(feats)


def _worker_init(worker_index: int, worker_count: int) -> None:
    import jax

    jax.config.update("jax_platforms", "cpu")


class Pipeline:
    """Iterator over batches (numpy dicts) with grain's checkpointable state.

    Attributes:
      langs: stream names (target languages by default); ``lang``/``group_lang`` ids index this list.
      stats: :class:`PipelineStats`.
      steps_per_epoch: batches per epoch (per process; the same on every process).
      dataset: the underlying ``grain.IterDataset``.
    """

    def __init__(self, dataset, langs, stats, shapes, steps_per_epoch):
        self.dataset, self.langs, self.stats = dataset, list(langs), stats
        self._shapes, self.steps_per_epoch = shapes, steps_per_epoch
        self._iterator = None

    @property
    def iterator(self):
        """The grain ``DatasetIterator`` (created on first use)."""
        if self._iterator is None:
            self._iterator = iter(self.dataset)
        return self._iterator

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self.iterator)

    def get_state(self) -> dict[str, Any]:
        """Grain iterator state; pass to :meth:`set_state` of an identically built pipeline to resume."""
        return self.iterator.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a state from :meth:`get_state`."""
        self.iterator.set_state(state)

    def batch_shapes(self) -> list[BatchShape]:
        """Every shape this pipeline can yield, sorted by feature steps: the train step compiles once per shape."""
        return sorted(set(self._shapes), key=lambda s: (s.features[len(s.tokens) - 1], s.tokens[-1], s.features))

    def close(self) -> None:
        """Stops grain worker processes and threads, if any."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()


def _grain_iter(ds, cfg: PipelineConfig):
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch))
    if cfg.worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags (defaults suffice)
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count), worker_init_fn=_worker_init)
    return ds


def _metadata(sources, vocab, langs, targets, metadata, cfg: PipelineConfig) -> dict[str, SourceMeta]:
    metadata = dict(metadata or {})
    for lang, target in zip(langs, targets):
        text_only = lang in cfg.text_streams
        if lang not in metadata:
            try:
                metadata[lang] = scan_source(sources[lang], vocab, target, features=cfg.features,
                                             source_tokens=cfg.source_tokens > 0, text_only=text_only)
            except ValueError as e:
                raise ValueError(f"stream {lang!r}: {e}") from e
        _check_meta(lang, metadata[lang], len(sources[lang]), cfg, source_tokens=cfg.source_tokens > 0,
                    text_only=text_only)
    return metadata


def _check_meta(name: str, meta: SourceMeta, n: int, cfg: PipelineConfig, source_tokens: bool,
                text_only: bool = False) -> None:
    """The metadata fits its source, counts lengths in the pipeline's unit and is text-only exactly for a text
    stream (``text_only``)."""
    if len(meta.n_frames) != n:
        raise ValueError(f"metadata for {name} has {len(meta.n_frames)} examples, its source {n}")
    if meta.features != cfg.features:
        raise ValueError(f"metadata for {name} counts {STEP_UNITS[meta.features]} ({meta.features} features), "
                         f"but features={cfg.features!r} needs {STEP_UNITS[cfg.features]}: scan the source with "
                         f"scan_source(..., features={cfg.features!r})")
    if cfg.features != "text" and (meta.kind == "text") != text_only:
        if text_only:
            raise ValueError(f"{name} is a text stream (text_streams), but its metadata is not text-only ({meta.kind} "
                             f"source): scan it with scan_source(..., text_only=True)")
        raise ValueError(f"metadata for {name} is text-only (no audio): a text-only source of a speech pipeline "
                         f"is a training stream listed in text_streams")
    if cfg.features == "waveform" and meta.kind not in ("audio", "text"):
        raise ValueError(f"{name}: features='waveform' needs an audio source, this one holds {meta.kind} features")
    if source_tokens and meta.n_src_tokens is None:
        raise ValueError(f"metadata for {name} has no source token counts, which source_tokens="
                         f"{cfg.source_tokens} needs: scan the source with scan_source(..., source_tokens=True)")


def _check_shard(shard_index: int, shard_count: int) -> None:
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index}")


def make_train_pipeline(
    sources: Mapping[str, Any],
    vocab,
    cfg: PipelineConfig = PipelineConfig(),
    *,
    shard_index: int = 0,
    shard_count: int = 1,
    num_devices: int = 1,
    metadata: Mapping[str, SourceMeta] | None = None,
) -> Pipeline:
    """Training pipeline over one source per stream (see the module docstring).

    Args:
      sources: ``{stream: data source}``, e.g. ``MustC(config="en-de").as_data_source("train")`` under ``"de"``
        (or under ``"en-de"`` with that stream's target ``"de"`` in ``cfg.targets``).
      vocab: target vocabulary with a ``<lang:xx>`` tag for every target language (and every source language
        with ``cfg.source_tokens``).
      cfg: :class:`PipelineConfig`.
      shard_index, shard_count: this process's index and the number of processes.
      num_devices: data-parallel devices fed by this process; every device gets the same number of rows of
        every language group (stratified: rows per group are a multiple of it; otherwise all rows).
      metadata: precomputed :func:`scan_source` results per stream (scanned when missing), counting the
        feature steps of ``cfg.features`` (and source tokens with ``cfg.source_tokens``).

    Returns:
      A :class:`Pipeline`; each process yields the same sequence of shapes.
    """
    _check_shard(shard_index, shard_count)
    langs = list(cfg.langs or sorted(sources))
    targets = list(cfg.targets or langs)
    missing = [l for l in langs if l not in sources]
    if missing:
        raise ValueError(f"no source for language(s) {missing}; sources: {sorted(sources)}")
    for target in targets:
        vocab.lang_id(target)
    for field in ("noise_streams", "text_streams"):
        unknown = [s for s in getattr(cfg, field) if s not in langs]
        if unknown:
            raise ValueError(f"{field} {unknown} are not streams of this pipeline: {langs}")
    metadata = _metadata(sources, vocab, langs, targets, metadata, cfg)
    n_groups = _n_groups(cfg, langs)

    stats = PipelineStats()
    kept_ids, bucket_of = {}, {}
    for lang in langs:
        meta = metadata[lang]
        reasons = {"empty_source": meta.n_frames <= 2} if cfg.features == "text" else {}
        if lang not in cfg.text_streams:  # text streams have no feature steps (their examples go to bucket 0)
            reasons |= {"too_long": meta.n_frames > cfg.max_frames,
                        "too_short": meta.n_frames < max(cfg.min_frames, 1)}
        reasons |= {"empty_target": meta.n_tokens <= 2, "target_too_long": meta.n_tokens > cfg.max_tokens}
        if cfg.source_tokens:
            reasons.update(zip(SOURCE_DROP_REASONS, (meta.n_src_tokens <= 2, meta.n_src_tokens > cfg.source_tokens)))
        dropped, counts = np.zeros(len(meta.n_frames), bool), collections.Counter()
        for reason in reasons:
            counts[reason] = int(np.count_nonzero(reasons[reason] & ~dropped))
            dropped |= reasons[reason]
        stats.dropped_by_lang[lang] = counts
        kept_ids[lang] = np.flatnonzero(~dropped)
        stats.kept[lang] = len(kept_ids[lang])
        bucket_of[lang] = np.searchsorted(cfg.frame_buckets, meta.n_frames[kept_ids[lang]])
    sizes = [stats.kept[l] for l in langs]
    if min(sizes) == 0:
        empty = [l for l in langs if not stats.kept[l]]
        raise ValueError(f"no usable training examples for {empty}:\n{stats.summary()}")
    per_epoch = epoch_sizes(sizes, cfg.temperature)
    stats.epoch_examples = dict(zip(langs, per_epoch.tolist()))

    offsets = np.cumsum([0] + [len(sources[l]) for l in langs])
    cells, shapes, rows_local = {}, {}, {}
    for k, t in enumerate(cfg.frame_buckets):
        cell = []
        for li, lang in enumerate(langs):
            ids = kept_ids[lang][bucket_of[lang] == k]
            m = int(round(per_epoch[li] * len(ids) / stats.kept[lang]))
            if m:
                cell.append((li, ids + offsets[li], m))
        if not cell:
            continue
        u = _bucket(max(int(metadata[langs[li]].n_tokens[ids - offsets[li]].max()) for li, ids, _ in cell),
                    cfg.token_buckets)
        shapes[k] = _shape(cfg, t, u, n_groups, num_devices)
        cells[k], rows_local[k] = cell, shapes[k].tokens[-2]
    plan = _TrainPlan(cells, shapes, offsets, cfg, n_groups, rows_local, shard_index, shard_count)
    epochs = cfg.num_epochs if cfg.num_epochs is not None else sys.maxsize // plan.steps_per_epoch
    total = plan.steps_per_epoch * epochs
    loader = _BatchLoader([sources[l] for l in langs], [metadata[l].kind for l in langs], vocab, langs, cfg,
                          True, shard_index, stats, targets)
    ds = grain.MapDataset.range(total).map(plan).map(loader)
    logger.info("train pipeline: %d batches per epoch, %d shapes, temperature %s\n%s", plan.steps_per_epoch,
                len(shapes), cfg.temperature, stats.summary())
    if sum(stats.dropped.values()):
        logger.warning("train pipeline dropped %s", dict(stats.dropped))
    return Pipeline(_grain_iter(ds, cfg), langs, stats, list(shapes.values()), plan.steps_per_epoch)


def make_eval_pipeline(
    source,
    vocab,
    cfg: PipelineConfig = PipelineConfig(),
    batch_size: int = 32,
    *,
    lang: str | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    metadata: SourceMeta | None = None,
) -> Pipeline:
    """Single pass over every example of ``source`` in fixed-shape ``[batch_size, ...]`` batches.

    Examples are sorted by length (longest first) and padded to frame/token buckets (past the last bucket:
    rounded up to a multiple of the first); rows that only fill the last batch have ``valid`` 0. Nothing is
    filtered except utterances shorter than one frame (one sample for waveform features; counted as
    ``too_short``). No SpecAugment, no denoising noise, no text streams (``cfg.text_streams`` does not apply;
    batches have no ``speech``). ``lang`` is the target language of every example (None: each example's
    ``tgt_lang``). Language ids index the target languages of ``cfg.targets`` (first appearance order) when
    given, else ``cfg.langs`` when given, else the sorted target languages found.
    Process ``shard_index`` gets rows ``[s·batch_size, (s+1)·batch_size)`` of each global batch.
    """
    _check_shard(shard_index, shard_count)
    name = f"eval source ({lang})" if lang else "eval source"
    if metadata is None:
        try:
            metadata = scan_source(source, vocab, lang, features=cfg.features)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e
    meta = metadata
    _check_meta(name, meta, len(source), cfg, source_tokens=False)
    tgt_langs = np.asarray(meta.tgt_langs) if lang is None else np.full(len(meta.n_frames), lang)
    known = list(dict.fromkeys(cfg.targets)) if cfg.targets else list(cfg.langs)
    langs = known or sorted(set(tgt_langs.tolist()))
    unknown = sorted(set(tgt_langs.tolist()) - set(langs))
    if unknown:
        raise ValueError(f"target languages {unknown} are not in {'cfg.targets' if cfg.targets else 'cfg.langs'} "
                         f"{langs}")
    lang_index = np.array([langs.index(x) for x in tgt_langs.tolist()], np.int64)
    stats = PipelineStats()
    keep = meta.n_frames >= 1
    for l in langs:
        mine = tgt_langs == l
        stats.kept[l] = int(np.count_nonzero(keep & mine))
        stats.dropped_by_lang[l] = collections.Counter(too_short=int(np.count_nonzero(~keep & mine)))
    order = np.flatnonzero(keep)
    order = order[np.argsort(-meta.n_frames[order], kind="stable")]
    width = batch_size * shard_count
    specs, shapes = [], []
    for i, start in enumerate(range(0, len(order), width)):
        ids = _pad(order[start : start + width], width)[shard_index * batch_size : (shard_index + 1) * batch_size]
        chunk = order[start : start + width]
        t = _bucket(int(meta.n_frames[chunk].max()), cfg.frame_buckets)
        u = _bucket(int(meta.n_tokens[chunk].max()), cfg.token_buckets)
        shape = _batch_shape(cfg, (batch_size,), t, u)
        row_lang = np.where(ids >= 0, lang_index[np.maximum(ids, 0)], 0).astype(np.int32)
        specs.append(dict(index=i, shape=shape, group_lang=None, slot=np.where(ids >= 0, 0, -1), lang=row_lang,
                          example=ids))
        shapes.append(shape)
    loader = _BatchLoader([source], [meta.kind], vocab, langs, dataclasses.replace(cfg, specaugment=None), False,
                          shard_index, stats)
    ds = grain.MapDataset.source(specs).map(loader)
    return Pipeline(_grain_iter(ds, cfg), langs, stats, shapes, len(specs))
