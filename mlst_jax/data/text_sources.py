"""Random-access text sources for ``PipelineConfig(features="text")`` (mBART denoising and MT streams).

* :func:`read_bitext`: a tab-separated parallel text file as a list of example dicts;
* :class:`TranscriptTargets`: a speech-translation source whose targets are its transcripts (denoising or
  ASR-style streams);
* :class:`ConcatSource`: several sources as one.
"""
from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any, Mapping

__all__ = ["read_bitext", "TranscriptTargets", "ConcatSource"]


def read_bitext(path, src_lang: str, tgt_lang: str) -> list[dict[str, str]]:
    """Reads ``source<TAB>target`` lines (UTF-8) into example dicts with ``id`` (``<file stem>:<line>``),
    ``src_lang``, ``tgt_lang``, ``src_text``, ``tgt_text``, and empty ``talk`` and ``speaker``.

    Raises:
      ValueError: naming the file and line for a line without exactly one tab, an empty side or bytes that are
        not UTF-8; naming the file when it holds no line.
    """
    path = Path(path)
    out = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{n}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if n == 1:
                line = line.removeprefix("\ufeff")
            line = line.rstrip("\n").removesuffix("\r")
            sides = line.split("\t")
            if len(sides) != 2:
                raise ValueError(f"{path}:{n}: expected 'source<TAB>target', found {len(sides) - 1} tabs")
            if not sides[0].strip() or not sides[1].strip():
                raise ValueError(f"{path}:{n}: empty {'source' if not sides[0].strip() else 'target'}")
            out.append(dict(id=f"{path.stem}:{n}", src_lang=src_lang, tgt_lang=tgt_lang, src_text=sides[0],
                            tgt_text=sides[1], talk="", speaker=""))
    if not out:
        raise ValueError(f"{path}: empty bitext file")
    return out


class TranscriptTargets:
    """A speech-translation source seen with its transcripts as targets: example ``i`` is ``source[i]`` with
    ``tgt_text`` = its ``src_text`` and ``tgt_lang`` = its ``src_lang`` (other fields as stored)."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex: Mapping = self.source[i]
        missing = [k for k in ("src_text", "src_lang") if k not in ex]
        if missing:
            raise ValueError(f"example {i} has no {missing} to use as its target (keys: {sorted(ex)})")
        return {**ex, "tgt_text": ex["src_text"], "tgt_lang": ex["src_lang"]}


class ConcatSource:
    """Several random-access sources as one: indices run through them in order."""

    def __init__(self, *sources):
        self.sources = list(sources)
        self._ends = []
        total = 0
        for s in self.sources:
            total += len(s)
            self._ends.append(total)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, i: int):
        i, n = int(i), len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a source of {n} examples")
        i %= n
        k = bisect.bisect_right(self._ends, i)
        return self.sources[k][i - (self._ends[k - 1] if k else 0)]
