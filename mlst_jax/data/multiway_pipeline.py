"""Multi-way batches: the same utterances with their references in every stream, from the pipeline's sources.

:func:`make_multiway_pipeline` takes ``{stream: data source}`` of one split, as the training pipeline does
(e.g. TFDS MuST-C ``en-de``, ``en-es``, ... under ``"de"``, ``"es"``), keeps the examples present in every
source and yields batches read by the pipeline's own loader (:mod:`mlst_jax.data.pipeline`: features, CMVN
and tokens as evaluation batches):

* ``features`` float32 [B, T, 80] (fbank + the config's CMVN; [B, N] with waveform features), zero past each
  length; ``feature_lengths`` int32 [B];
* ``decoder_input`` / ``target`` / ``loss_weights`` [n, B, U], stream i = ``langs[i]``: ``target`` is
  ``[<lang:xx>, pieces..., </s>]`` (xx the stream's target language), ``decoder_input`` is ``[</s>,
  <lang:xx>, pieces...]``, padded with ``<pad>``; the weight is 0 at the tag and at padding;
* ``valid`` int32 [B] (0 for rows that only fill the last batch; their weights are 0 too) and ``index`` int32
  [B] (the row's position in ``utterances``, -1 for padding); ``src_tokens`` with ``cfg.source_tokens``.

**Alignment.** MuST-C pairs cut the same segments out of the same talk recordings, so an utterance is
identified by its talk, its transcript and its length (audio samples, or frames of fbank sources); with
``match_audio`` its audio (or fbank) bytes must match too. Examples sharing a key are paired in id order.
Examples missing from some other source are unaligned: counted per stream in
``stats.dropped_by_lang[stream]["unaligned"]`` and logged. Utterances follow the first stream's example ids in
natural order (``talk_2_9`` before ``talk_2_10``), which is MuST-C's corpus order when its talks are listed in
that order; the audio is read from the first stream's source.

**Batches.** Utterances longer than ``cfg.max_frames`` feature steps or shorter than one frame (one sample for
waveform features) are left out (counted as ``too_long`` / ``too_short``). The rest are sorted by length
(longest first) and cut into batches of ``batch_size``; each batch is padded to one of at most
``num_buckets`` lengths (picked from the data, multiples of ``frame_multiple``) and to its bucket's token
length (a multiple of ``token_multiple``), so a jitted consumer compiles at most ``num_buckets`` times.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import math
import re
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np

from mlst_jax.data.batch_loader import PipelineStats, _BatchLoader, _grain_iter, _pad

from mlst_jax.data.batch_shapes import PipelineConfig, _batch_shape
from mlst_jax.data.source_meta import _steps, _text, iter_examples

__all__ = ["MultiwayPipeline", "make_multiway_pipeline"]

logger = logging.getLogger(__name__)


class MultiwayPipeline:
    """A re-iterable sequence of multi-way batches (see the module docstring); iterating reads batch by batch
    with grain's reading threads (``cfg.read_threads``, ``prefetch``, ``worker_count``).

    Attributes:
      langs: streams, in the order of the targets' leading axis.
      targets: the streams' target languages.
      utterances: the aligned utterances used (``index`` values index this list): dicts with ``talk``,
        ``src_text``, ``src_lang``, ``speaker``, ``ids`` and ``examples`` (``{stream: example id / index in
        its source}``) and ``references`` (``{stream: target text}``).
      stats: :class:`~mlst_jax.data.pipeline.PipelineStats` (kept, and dropped per stream and reason).
      batch_size: rows per batch.
      dataset: the ``grain.MapDataset`` of batches.
    """

    def __init__(self, dataset, langs, targets, utterances, stats, specs, batch_size, cfg: PipelineConfig):
        self.dataset, self.langs, self.targets = dataset, tuple(langs), tuple(targets)
        self.utterances, self.stats, self.batch_size = utterances, stats, batch_size
        self._shapes = [(s["shape"].features[1], s["shape"].tokens[1]) for s in specs]
        self._cfg = cfg

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The distinct (feature steps T, tokens U) batch shapes."""
        return sorted(set(self._shapes))

    def __len__(self) -> int:
        return len(self._shapes)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(_grain_iter(self.dataset, self._cfg))

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        return self.dataset[i % len(self)]


class _Aligned:
    """One source seen through the aligned utterances: item ``i`` is utterance ``i``'s example."""

    def __init__(self, source, examples: Sequence[int]):
        self.source, self.examples = source, list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return self.source[self.examples[int(i)]]


def _natural(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _scan(source, features: str, match_audio: bool, chunk: int = 256) -> tuple[str, list[dict[str, Any]]]:
    """The source's kind and, per example, its alignment key, id, texts and feature steps."""
    kind, records = None, []
    for _, ex, kind in iter_examples(source, chunk):
        data = np.asarray(ex[kind])
        key = (_text(ex["talk"]), _text(ex["src_text"]), len(data))
        if match_audio:
            key += (hashlib.sha1(np.ascontiguousarray(data).tobytes()).hexdigest(),)
        records.append(dict(key=key, id=_text(ex.get("id", b"")), tgt_text=_text(ex["tgt_text"]),
                            src_lang=_text(ex.get("src_lang", b"")), speaker=_text(ex.get("speaker", b"")),
                            steps=_steps(ex, kind, features)))
    return kind or "audio", records


def _align(records: Mapping[str, list[dict]], langs: Sequence[str]) -> list[dict[str, int]]:
    """``{stream: example index}`` of every utterance present in all streams, in the first stream's id order."""
    def by_id(recs):
        return sorted(range(len(recs)), key=lambda i: (_natural(recs[i]["id"]), i))

    pools = {}
    for lang in langs[1:]:
        pools[lang] = collections.defaultdict(collections.deque)
        for i in by_id(records[lang]):
            pools[lang][records[lang][i]["key"]].append(i)
    out = []
    for i in by_id(records[langs[0]]):
        key = records[langs[0]][i]["key"]
        if all(pools[l].get(key) for l in langs[1:]):
            out.append({langs[0]: i, **{l: pools[l][key].popleft() for l in langs[1:]}})
    return out


def _round_up(x: int, m: int) -> int:
    return -(-int(x) // m) * m


def _pick_buckets(maxima: Sequence[int], k: int, multiple: int) -> list[int]:
    """At most ``k`` lengths (multiples of ``multiple``): the batch maxima at evenly spaced ranks, the largest
    included, so every batch fits one."""
    ranked = sorted(_round_up(m, multiple) for m in maxima)
    return sorted({ranked[math.ceil(i * len(ranked) / k) - 1] for i in range(1, k + 1)})


def make_multiway_pipeline(
    sources: Mapping[str, Any],
    vocab,
    cfg: PipelineConfig = PipelineConfig(),
    batch_size: int = 8,
    *,
    max_utterances: int | None = None,
    num_buckets: int = 2,
    frame_multiple: int = 64,
    token_multiple: int = 8,
    match_audio: bool = False,
) -> MultiwayPipeline:
    """Multi-way batches of the utterances present in every source (see the module docstring).

    Args:
      sources: ``{stream: data source}`` of one split, e.g. ``MustC(config="en-de").as_data_source("tst_COMMON")``
        under ``"de"``; the sources must cut the same segments from the same recordings (MuST-C pairs).
      vocab: target vocabulary with a ``<lang:xx>`` tag for every target language.
      cfg: :class:`~mlst_jax.data.batch_shapes.PipelineConfig`: ``langs`` (stream order; default the sorted
        keys), ``targets``, ``features``, ``cmvn``/``global_cmvn_path``, ``max_frames``, ``source_tokens``,
        ``on_bad_example`` and grain's reading settings are used; no SpecAugment.
      batch_size: rows per batch (the last batch is padded with invalid rows).
      max_utterances: use only the first N aligned utterances (in the order of the module docstring).
      num_buckets: at most this many distinct batch shapes.
      frame_multiple, token_multiple: lengths and token lengths are rounded up to these multiples.
      match_audio: also require the same audio (or fbank) bytes in every source.

    Raises:
      ValueError: for a missing source, an unknown target language, or no aligned utterance.
    """
    langs = list(cfg.langs or sorted(sources))
    targets = list(cfg.targets or langs)
    if batch_size < 1 or num_buckets < 1 or frame_multiple < 1 or token_multiple < 1:
        raise ValueError(f"batch_size ({batch_size}), num_buckets ({num_buckets}), frame_multiple "
                         f"({frame_multiple}) and token_multiple ({token_multiple}) must be >= 1")
    missing = [l for l in langs if l not in sources]
    if missing:
        raise ValueError(f"no source for stream(s) {missing}; sources: {sorted(sources)}")
    for target in targets:
        vocab.lang_id(target)
    kinds, records = {}, {}
    for lang in langs:
        try:
            kinds[lang], records[lang] = _scan(sources[lang], cfg.features, match_audio)
        except ValueError as e:
            raise ValueError(f"stream {lang!r}: {e}") from e
    aligned = _align(records, langs)
    stats = PipelineStats()
    for lang in langs:
        stats.dropped_by_lang[lang] = collections.Counter(unaligned=len(records[lang]) - len(aligned))
    unaligned = {l: c["unaligned"] for l, c in stats.dropped_by_lang.items()}
    log = logger.warning if any(unaligned.values()) else logger.info
    log("multi-way %s: %d aligned utterances; unaligned per stream: %s", "/".join(langs), len(aligned), unaligned)
    if max_utterances is not None:
        aligned = aligned[: max(0, int(max_utterances))]
    steps = np.array([records[langs[0]][a[langs[0]]]["steps"] for a in aligned], np.int64)
    reasons = {"too_long": steps > cfg.max_frames, "too_short": steps < 1}
    for lang in langs:
        stats.dropped_by_lang[lang].update({r: int(np.count_nonzero(m)) for r, m in reasons.items()})
    keep = ~(reasons["too_long"] | reasons["too_short"])
    if not keep.all():
        logger.warning("multi-way: leaving out %d of %d utterances (shorter than one frame or longer than "
                       "max_frames=%d)", int((~keep).sum()), len(aligned), cfg.max_frames)
    aligned, steps = [a for a, k in zip(aligned, keep) if k], steps[keep]
    if not aligned:
        raise ValueError(f"no multi-way aligned utterances in the sources of {', '.join(langs)}")
    for lang in langs:
        stats.kept[lang] = len(aligned)

    utterances, token_ids = [], {l: [] for l in langs}
    for a in aligned:
        first = records[langs[0]][a[langs[0]]]
        talk, src_text, _ = first["key"][:3]
        utterances.append(dict(talk=talk, src_text=src_text, src_lang=first["src_lang"], speaker=first["speaker"],
                               ids={l: records[l][a[l]]["id"] for l in langs}, examples=dict(a),
                               references={l: records[l][a[l]]["tgt_text"] for l in langs}))
        for lang, target in zip(langs, targets):
            token_ids[lang].append(vocab.encode(records[lang][a[lang]]["tgt_text"], target))

    order = np.argsort(-steps, kind="stable")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    maxima = [int(steps[c].max()) for c in chunks]
    buckets = _pick_buckets(maxima, num_buckets, frame_multiple)
    bucket_of = [int(np.searchsorted(buckets, m)) for m in maxima]
    ntok = np.max([[len(ids) for ids in token_ids[l]] for l in langs], axis=0)
    tokens: dict[int, int] = {}
    for c, b in zip(chunks, bucket_of):
        tokens[b] = max(tokens.get(b, 0), int(ntok[c].max()))
    specs = []
    for j, (c, b) in enumerate(zip(chunks, bucket_of)):
        rows = _pad(c, batch_size)
        shape = _batch_shape(cfg, (batch_size,), buckets[b], _round_up(tokens[b], token_multiple))
        specs.append(dict(index=j, shape=shape, group_lang=None, slot=np.where(rows >= 0, 0, -1),
                          lang=np.zeros(batch_size, np.int32), example=rows,
                          references=[[token_ids[l][i] if i >= 0 else [] for i in rows] for l in langs]))
    source = _Aligned(sources[langs[0]], [a[langs[0]] for a in aligned])
    loader = _BatchLoader([source], [kinds[langs[0]]], vocab, langs, dataclasses.replace(cfg, specaugment=None),
                          False, 0, stats, targets)
    batches = MultiwayPipeline(grain.MapDataset.source(specs).map(loader), langs, targets, utterances, stats, specs,
                               batch_size, cfg)
    logger.info("multi-way: %d utterances in %d batches of %d, shapes %s", len(aligned), len(batches), batch_size,
                batches.shapes)
    return batches
