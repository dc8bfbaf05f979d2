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
from typing import Any, Mapping

import grain
import numpy as np

from mlst_jax.data.batch_loader import PipelineStats, _BatchLoader, _grain_iter, _pad
from mlst_jax.data.batch_shapes import BatchShape, PipelineConfig, _batch_shape, _bucket, _n_groups, _shape
from mlst_jax.data.source_meta import STEP_UNITS, SourceMeta, scan_source

__all__ = ["SourceMeta", "PipelineStats", "Pipeline", "scan_source", "language_probs", "epoch_sizes",
           "make_train_pipeline", "make_eval_pipeline"]

logger = logging.getLogger(__name__)

DROP_REASONS = ("too_long", "too_short", "empty_target", "target_too_long")
SOURCE_DROP_REASONS = ("empty_source", "source_too_long")  # with source_tokens > 0
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

def _draw(ids: np.ndarray, m: int, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
    q, r = divmod(m, len(ids))
    out = np.concatenate([np.tile(ids, q), ids[rng.choice(len(ids), r, replace=False)]])
    return rng.permutation(out) if shuffle else np.sort(out)

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
