"""Multi-way batches: the same utterances with their references in every target language, in static shapes.

`multiway_batches` reads the utterances present in every requested direction of a MuST-C-layout split
(`multiway.multiway_aligned`), and yields batches in the training pipeline's conventions:

* ``features`` float32 [B, T, 80]: Kaldi fbank of the 16-bit audio (as stored by the TFDS builders), then the
  config's CMVN (utterance, global or none), zero past each length; ``feature_lengths`` int32 [B];
* ``decoder_input`` / ``target`` / ``loss_weights`` [n, B, U], language i = ``langs[i]``: ``target`` is
  ``[<lang:xx>, pieces..., </s>]``, ``decoder_input`` is ``[</s>, <lang:xx>, pieces...]``, padded with
  ``<pad>``; the weight is 0 at the tag and at padding (``pipeline._BatchLoader``'s convention);
* ``valid`` int32 [B] (0 for rows that only fill the last batch; their weights are 0 too) and ``index``
  int32 [B] (the row's position in the aligned set, -1 for padding).

Utterances are sorted by length (longest first) and cut into batches of ``batch_size``; each batch is padded
to one of at most ``num_buckets`` frame lengths (picked from the data) and the token length of its bucket,
so a jitted consumer compiles at most ``num_buckets`` times. Audio is read batch by batch while iterating.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mlst_jax.audio.cmvn import GlobalCMVN, utterance_cmvn
from mlst_jax.audio.fbank import FRAME_LENGTH, FRAME_SHIFT, NUM_MEL_BINS, SAMPLE_RATE, num_frames
from mlst_jax.data.vocab import EOS_ID, PAD_ID

__all__ = ["MultiwayBatches", "multiway_batches", "available_splits"]

logger = logging.getLogger(__name__)

FBANK_ROWS = 8


@dataclasses.dataclass
class _Planned:
    rows: np.ndarray  # utterance indices into `utterances`
    frames: int
    tokens: int


class MultiwayBatches:
    """A re-iterable sequence of multi-way batches (see the module docstring).

    Attributes:
      langs: target languages, in the order of the batches' leading axis.
      utterances: the aligned utterance dicts that are used (`multiway.multiway_aligned` entries).
      token_ids: per language, the encoded reference of every utterance.
      shapes: the distinct (frames T, tokens U) batch shapes.
    """

    def __init__(self, langs, utterances, token_ids, frames, batch_size, num_buckets, frame_multiple,
                 token_multiple, cmvn, global_cmvn):
        self.langs = tuple(langs)
        self.utterances = list(utterances)
        self.token_ids = token_ids
        self.batch_size = batch_size
        self.cmvn, self._global = cmvn, global_cmvn
        order = np.argsort(-np.asarray(frames), kind="stable")
        chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        maxima = [int(frames[c].max()) for c in chunks]
        buckets = _pick_buckets(maxima, num_buckets, frame_multiple)
        bucket_of = [int(np.searchsorted(buckets, m)) for m in maxima]
        ntok = np.max([[len(ids) for ids in token_ids[l]] for l in self.langs], axis=0)
        tokens = {}
        for c, b in zip(chunks, bucket_of):
            tokens[b] = max(tokens.get(b, 0), int(ntok[c].max()))
        self._batches = [_Planned(c, buckets[b], _round_up(tokens[b], token_multiple))
                         for c, b in zip(chunks, bucket_of)]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return sorted({(p.frames, p.tokens) for p in self._batches})

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for p in self._batches:
            yield self._load(p)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self._load(self._batches[i])

    def _load(self, p: _Planned) -> dict[str, np.ndarray]:
        from mlst_jax.data.layouts import load_segment

        b, t, u, n = self.batch_size, p.frames, p.tokens, len(self.langs)
        max_samples = FRAME_LENGTH + (t - 1) * FRAME_SHIFT
        waves = np.zeros((b, max_samples), np.float32)
        samples = np.zeros(b, np.int32)
        dec, tgt = np.full((n, b, u), PAD_ID, np.int32), np.full((n, b, u), PAD_ID, np.int32)
        weights = np.zeros((n, b, u), np.float32)
        valid, index = np.zeros(b, np.int32), np.full(b, -1, np.int32)
        for row, i in enumerate(p.rows):
            utt = self.utterances[i]
            wave = load_segment(utt["audio_path"], utt["offset"], utt["duration"], SAMPLE_RATE)
            pcm = np.clip(np.round(wave * 32768.0), -32768, 32767)[:max_samples]  # the builders store int16
            waves[row, : len(pcm)] = pcm / 32768.0
            samples[row], valid[row], index[row] = len(pcm), 1, i
            for li, lang in enumerate(self.langs):
                ids = self.token_ids[lang][i]
                tgt[li, row, : len(ids)] = ids
                dec[li, row, : len(ids)] = [EOS_ID] + ids[:-1]
                weights[li, row, 1: len(ids)] = 1.0
        feats = np.zeros((b, t, NUM_MEL_BINS), np.float32)
        lengths = np.zeros(b, np.int32)
        for start in range(0, b, FBANK_ROWS):
            rows = slice(start, start + FBANK_ROWS)
            if samples[rows].any():
                feats[rows], lengths[rows] = _fbank_cpu(waves[rows], samples[rows])
        feats = self._normalize(feats, lengths)
        return dict(features=feats, feature_lengths=lengths, decoder_input=dec, target=tgt, loss_weights=weights,
                    valid=valid, index=index)

    def _normalize(self, feats: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        if self.cmvn == "utterance":
            return utterance_cmvn(feats, lengths)
        if self.cmvn == "global":
            feats = self._global.apply(feats)
        return np.where((np.arange(feats.shape[1]) < lengths[:, None])[..., None], feats, 0.0).astype(np.float32)


def _round_up(x: int, m: int) -> int:
    return -(-int(x) // m) * m


def _pick_buckets(maxima: Sequence[int], k: int, multiple: int) -> list[int]:
    """At most `k` frame lengths (multiples of `multiple`): the batch maxima at evenly spaced ranks, the
    largest included, so every batch fits one."""
    ranked = sorted(_round_up(m, multiple) for m in maxima)
    picks = {ranked[math.ceil(i * len(ranked) / k) - 1] for i in range(1, k + 1)}
    return sorted(picks)


def _fbank_cpu(waves: np.ndarray, n_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import jax

    from mlst_jax.audio.fbank import fbank_batch

    rows = np.zeros((FBANK_ROWS, waves.shape[1]), np.float32)
    counts = np.zeros(FBANK_ROWS, np.int32)
    rows[: len(waves)], counts[: len(waves)] = waves, n_samples
    with jax.default_device(jax.local_devices(backend="cpu")[0]):  # process-local in multi-process runs
        feats, n = fbank_batch(rows, counts)
        return np.asarray(feats)[: len(waves)], np.asarray(n)[: len(waves)]


def available_splits(root: str | os.PathLike, pair: str) -> list[str]:
    """Split folders of one MuST-C direction (`<root>/<pair>/data/<split>`)."""
    base = Path(root) / pair / "data"
    return sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []


def multiway_batches(root: str | os.PathLike, langs: Sequence[str], split: str, vocab, *, src_lang: str = "en",
                     batch_size: int = 8, max_utterances: int | None = None, max_frames: int | None = None,
                     cmvn: str | None = "utterance", global_cmvn_path: str | os.PathLike | None = None,
                     num_buckets: int = 2, frame_multiple: int = 64, token_multiple: int = 8,
                     tolerance: float = 1e-3) -> MultiwayBatches:
    """Multi-way batches of `split` for target languages `langs` of a MuST-C-layout `root`.

    Args:
      root: folder holding `<src_lang>-<lang>/data/<split>` for every language.
      langs: target languages (the batches' language axis follows this order).
      split: split name, e.g. "tst-COMMON" or "dev".
      vocab: target `Vocab` with a `<lang:xx>` tag for every language.
      batch_size: rows per batch (the last batch is padded with invalid rows).
      max_utterances: use only the first N aligned utterances (corpus order).
      max_frames: drop utterances longer than this many frames.
      cmvn: "utterance", "global" (statistics from `global_cmvn_path`) or None, as the training config.
      num_buckets: at most this many distinct batch shapes.
      frame_multiple, token_multiple: frame / token lengths are rounded up to these multiples.
      tolerance: alignment tolerance in seconds (`multiway.multiway_aligned`).

    Raises:
      ValueError: for a missing direction or split, an unknown language tag, or no aligned utterance.
    """
    from mlst_jax.data.multiway import multiway_aligned

    langs = list(langs)
    if not langs:
        raise ValueError("multiway_batches needs at least one target language")
    if batch_size < 1 or num_buckets < 1:
        raise ValueError(f"batch_size ({batch_size}) and num_buckets ({num_buckets}) must be >= 1")
    if cmvn not in ("utterance", "global", None):
        raise ValueError(f"cmvn must be 'utterance', 'global' or None, got {cmvn!r}")
    global_cmvn = None
    if cmvn == "global":
        if not global_cmvn_path:
            raise ValueError("cmvn='global' needs global_cmvn_path (a GlobalCMVN .npz)")
        global_cmvn = GlobalCMVN.load(global_cmvn_path)
    for lang in langs:
        vocab.lang_id(lang)
    pairs = [f"{src_lang}-{l}" for l in langs]
    for pair in pairs:
        if not (Path(root) / pair / "data").is_dir():
            raise ValueError(f"{root}: no MuST-C direction {pair} (no {Path(root) / pair / 'data'})")
        if not (Path(root) / pair / "data" / split).is_dir():
            raise ValueError(f"{root}: direction {pair} has no split {split!r}; "
                             f"available: {', '.join(available_splits(root, pair)) or 'none'}")
    utts = list(multiway_aligned(root, pairs, split, tolerance=tolerance))
    if max_utterances is not None:
        utts = utts[: max(0, int(max_utterances))]
    frames = num_frames(np.round(np.array([u["duration"] for u in utts], np.float64) * SAMPLE_RATE).astype(np.int64))
    keep = frames >= 1
    if max_frames is not None:
        keep &= frames <= max_frames
    if not keep.all():
        logger.warning("multi-way %s: dropping %d of %d utterances (shorter than one frame or longer than "
                       "max_frames=%s)", split, int((~keep).sum()), len(utts), max_frames)
    utts = [u for u, k in zip(utts, keep) if k]
    frames = frames[keep]
    if not utts:
        raise ValueError(f"{root}: no multi-way aligned utterances in {split} for {', '.join(pairs)}")
    token_ids = {l: [vocab.encode(u["references"][l], l) for u in utts] for l in langs}
    batches = MultiwayBatches(langs, utts, token_ids, frames, batch_size, num_buckets, frame_multiple,
                              token_multiple, cmvn, global_cmvn)
    logger.info("multi-way %s: %d utterances in %d batches of %d, shapes %s", split, len(utts), len(batches),
                batch_size, batches.shapes)
    return batches
