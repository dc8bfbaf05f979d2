"""Multi-way aligned MuST-C test sets: segments present in every requested direction."""
from __future__ import annotations

import bisect
import logging
import os
from typing import Sequence

from mlst_jax.data.layouts import SkipReport, Utterance, read_mustc

__all__ = ["MultiwaySet", "multiway_aligned"]

logger = logging.getLogger(__name__)


class MultiwaySet(list):
    """A list of aligned utterance dicts; ``dropped`` maps each pair to its unaligned utterance count."""

    dropped: dict[str, int]


def _find(cands: list[tuple[float, float, int]], used: set[int], offset: float, duration: float, tol: float) -> int | None:
    lo = bisect.bisect_left(cands, (offset - tol, float("-inf"), -1))
    for cand_offset, cand_duration, idx in cands[lo:]:
        if cand_offset > offset + tol:
            break
        if idx not in used and abs(cand_duration - duration) <= tol:
            return idx
    return None


def multiway_aligned(
    root: str | os.PathLike,
    pairs: Sequence[str],
    split: str,
    *,
    tolerance: float = 1e-3,
    report: SkipReport | None = None,
) -> MultiwaySet:
    """MuST-C utterances present in all ``pairs`` (same talk wav, offset and duration within ``tolerance`` s).

    Args:
      root: MuST-C root holding ``<pair>/data/<split>``.
      pairs: directions sharing the source language, e.g. ``["en-de", "en-es", "en-fr"]``.
      split: split name, e.g. ``"tst-COMMON"``.
      tolerance: maximum offset and duration difference in seconds.
      report: collects utterances the readers skipped (logged when None).

    Returns:
      A :class:`MultiwaySet` (a list) of dicts with ``talk``, ``audio_path``,
      ``offset``, ``duration``, ``speaker``, ``src_lang``, ``src_text`` (from the
      first pair), ``ids`` ``{pair: id}`` and ``references`` ``{tgt_lang: text}``,
      in the first pair's order; ``.dropped`` gives ``{pair: n}`` unaligned
      utterances per direction (also logged).
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("multiway_aligned needs at least one pair")
    utts: dict[str, list[Utterance]] = {p: list(read_mustc(root, p, split, report=report)) for p in pairs}
    index: dict[str, dict[str, list[tuple[float, float, int]]]] = {}
    for p in pairs[1:]:
        by_talk: dict[str, list[tuple[float, float, int]]] = {}
        for i, u in enumerate(utts[p]):
            by_talk.setdefault(os.path.basename(u.audio_path), []).append((u.offset, u.duration, i))
        for cands in by_talk.values():
            cands.sort()
        index[p] = by_talk
    used: dict[str, set[int]] = {p: set() for p in pairs}
    out = MultiwaySet()
    for i, u in enumerate(utts[pairs[0]]):
        wav = os.path.basename(u.audio_path)
        hits = {pairs[0]: i}
        for p in pairs[1:]:
            j = _find(index[p].get(wav, []), used[p], u.offset, u.duration, tolerance)
            if j is None:
                break
            hits[p] = j
        if len(hits) < len(pairs):
            continue
        for p, j in hits.items():
            used[p].add(j)
        out.append({
            "talk": u.talk, "audio_path": u.audio_path, "offset": u.offset, "duration": u.duration,
            "speaker": u.speaker, "src_lang": u.src_lang, "src_text": u.src_text,
            "ids": {p: utts[p][j].id for p, j in hits.items()},
            "references": {utts[p][j].tgt_lang: utts[p][j].tgt_text for p, j in hits.items()},
        })
    out.dropped = {p: len(utts[p]) - len(used[p]) for p in pairs}
    logger.info(
        "multi-way %s %s: %d aligned utterances; dropped per direction: %s", split, "/".join(pairs), len(out), out.dropped
    )
    return out
