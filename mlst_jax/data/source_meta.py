"""Per-source metadata for the input pipeline: every example's feature steps and token counts, scanned once.

Feature steps are fbank frames (``features="fbank"``; audio counts Kaldi frames, 25 ms window, 10 ms shift),
16 kHz samples (``features="waveform"``, audio sources only) or source tokens (``features="text"``:
``len(vocab.encode(src_text, src_lang))``; audio and fbank fields are not read). :class:`SourceMeta` records
which it counts, so that metadata scanned for one cannot be used for another (:mod:`mlst_jax.data.pipeline`
checks it). A text-only source of a speech pipeline (``text_only=True``: a stream of
``PipelineConfig.text_streams``) has kind ``"text"`` and 0 feature steps per example.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from mlst_jax.audio.fbank import num_frames

__all__ = ["SourceMeta", "scan_source", "FEATURES", "STEP_UNITS"]

FEATURES = ("fbank", "waveform", "text")
STEP_UNITS = {"fbank": "frames", "waveform": "samples", "text": "source tokens"}


@dataclasses.dataclass
class SourceMeta:
    """Per-example lengths of one source: ``kind`` (``audio``/``fbank``, ``text`` for text scans and text-only
    scans), feature steps ``n_frames`` (fbank frames, samples when ``features`` is ``"waveform"``, source tokens
    when it is ``"text"``; all 0 for kind ``text`` with speech features: no audio), target token counts
    (``len(vocab.encode(text, lang))``, tag and ``</s>`` included), target
    languages and, when scanned for them, source token counts ``n_src_tokens`` (``len(vocab.encode(src_text,
    src_lang))``)."""

    kind: str
    n_frames: np.ndarray
    n_tokens: np.ndarray
    tgt_langs: np.ndarray
    features: str = "fbank"
    n_src_tokens: np.ndarray | None = None

    def save(self, path) -> None:
        """Writes an ``.npz`` file."""
        extra = {} if self.n_src_tokens is None else {"n_src_tokens": self.n_src_tokens}
        with open(path, "wb") as f:
            np.savez(f, kind=self.kind, n_frames=self.n_frames, n_tokens=self.n_tokens, tgt_langs=self.tgt_langs,
                     features=self.features, **extra)

    @classmethod
    def load(cls, path) -> "SourceMeta":
        """Reads a file written by :meth:`save` (older files, without ``features``, count fbank frames)."""
        with np.load(path) as d:
            return cls(str(d["kind"]), d["n_frames"], d["n_tokens"], d["tgt_langs"],
                       str(d["features"]) if "features" in d.files else "fbank",
                       d["n_src_tokens"] if "n_src_tokens" in d.files else None)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read(source, indices: Sequence[int]) -> list:
    return [source[int(i)] for i in indices]


def _kind(ex: Mapping) -> str:
    if "audio" in ex:
        return "audio"
    if "fbank" in ex:
        return "fbank"
    raise ValueError(f"example has neither 'audio' nor 'fbank' (keys: {sorted(ex)}); a text-only source is scanned "
                     "with text_only=True (in a speech pipeline: a stream of text_streams)")


def _steps(ex: Mapping, kind: str, features: str) -> int:
    """An example's feature steps: samples of its audio (waveform features) or fbank frames."""
    if features == "waveform":
        if kind != "audio":
            raise ValueError(f"features='waveform' needs audio examples, this source holds {kind} features")
        return len(ex["audio"])
    return num_frames(len(ex["audio"])) if kind == "audio" else len(ex["fbank"])


def _source_ids(vocab, ex: Mapping) -> list[int]:
    """The transcript as mBART source tokens: ``[<lang:src_lang>, pieces..., </s>]``."""
    missing = [k for k in ("src_text", "src_lang") if k not in ex]
    if missing:
        raise ValueError(f"source tokens need the transcript and its language, but the example has no {missing} "
                         f"(keys: {sorted(ex)})")
    return vocab.encode(_text(ex["src_text"]), _text(ex["src_lang"]))


def iter_examples(source, chunk: int = 256):
    """(index, example, kind) of every example of `source`, read `chunk` at a time; ValueError when the source
    mixes audio and fbank examples."""
    kind = None
    for start in range(0, len(source), chunk):
        for i, ex in zip(range(start, min(len(source), start + chunk)),
                         _read(source, range(start, min(len(source), start + chunk)))):
            k = _kind(ex)
            if kind not in (None, k):
                raise ValueError(f"source mixes {kind} and {k} examples (index {i})")
            kind = k
            yield i, ex, k


def scan_source(source, vocab, lang: str | None = None, chunk: int = 256, *, features: str = "fbank",
                source_tokens: bool = False, text_only: bool = False) -> SourceMeta:
    """Reads every example once for its feature steps and token counts.

    Args:
      source: random-access source of example dicts (``len`` and ``[]``).
      vocab: target :class:`~mlst_jax.data.vocab.Vocab`.
      lang: target language of every example; None reads each example's ``tgt_lang``.
      chunk: examples per read.
      features: ``"fbank"`` counts fbank frames, ``"waveform"`` audio samples, ``"text"`` source tokens
        (``n_src_tokens`` too; examples need only their texts and languages), as
        :class:`~mlst_jax.data.batch_shapes.PipelineConfig`.
      source_tokens: also count the transcript's source tokens (``n_src_tokens``).
      text_only: a text-only source for speech features (``"fbank"``/``"waveform"``: a stream of
        ``PipelineConfig.text_streams``): only the texts and languages are read, ``kind`` is ``"text"``,
        ``n_frames`` all 0 and ``n_src_tokens`` counted.
    """
    if features not in FEATURES:
        raise ValueError(f"features must be 'fbank', 'waveform' or 'text', got {features!r}")
    if text_only:
        if features == "text":
            raise ValueError("text_only=True scans text-only sources for speech features ('fbank' or 'waveform'); "
                             "features='text' reads only the texts already")
        meta = _scan_text(source, vocab, lang, chunk)
        return SourceMeta("text", np.zeros_like(meta.n_frames), meta.n_tokens, meta.tgt_langs, features,
                          meta.n_src_tokens)
    if features == "text":
        return _scan_text(source, vocab, lang, chunk)
    n = len(source)
    frames, tokens, langs, kind = np.zeros(n, np.int32), np.zeros(n, np.int32), [], None
    src_tokens = np.zeros(n, np.int32) if source_tokens else None
    for i, ex, kind in iter_examples(source, chunk):
        frames[i] = _steps(ex, kind, features)
        l = lang or _text(ex["tgt_lang"])
        tokens[i] = len(vocab.encode(_text(ex["tgt_text"]), l))
        langs.append(l)
        if source_tokens:
            src_tokens[i] = len(_source_ids(vocab, ex))
    return SourceMeta(kind or "audio", frames, tokens, np.array(langs, dtype=str).reshape(n), features, src_tokens)


def _scan_text(source, vocab, lang: str | None, chunk: int) -> SourceMeta:
    n = len(source)
    src_tokens, tokens, langs = np.zeros(n, np.int32), np.zeros(n, np.int32), []
    for start in range(0, n, chunk):
        for i, ex in zip(range(start, min(n, start + chunk)), _read(source, range(start, min(n, start + chunk)))):
            src_tokens[i] = len(_source_ids(vocab, ex))
            l = lang or _text(ex["tgt_lang"])
            tokens[i] = len(vocab.encode(_text(ex["tgt_text"]), l))
            langs.append(l)
    return SourceMeta("text", src_tokens, tokens, np.array(langs, dtype=str).reshape(n), "text", src_tokens.copy())
