"""Writers for the MuST-C, CoVoST 2 and Europarl-ST layouts (read back by :mod:`mlst_jax.data.layouts`).

The synthetic corpus is written in the real layouts so one set of readers
serves both. Audio is 16-bit PCM at 16 kHz; waveforms are float32 in [-1, 1]
at 16 kHz, quantized as ``clip(round(x * 32768), -32768, 32767)``. Output is a
pure function of the input (no timestamps, fixed formatting), so two runs give
identical bytes.

Several target languages share one source recording: pass several pairs/target
languages and give each segment's target text as ``{lang: text}``; a language
missing from the dict leaves that segment out of that direction. MuST-C stores
each talk's wav once and hard-links it into the other directions (copying where
links are not supported); CoVoST 2 and Europarl-ST keep source audio in a
per-source-language folder anyway.

Segment times are written with 6 decimals (MuST-C's own format), which the
readers map back to the exact 16 kHz sample by rounding.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import soundfile as sf

from mlst_jax.audio.io import SAMPLE_RATE

__all__ = ["Talk", "mp3_supported", "write_mustc", "write_covost2", "write_europarl_st", "COVOST_CV_COLUMNS"]

COVOST_CV_COLUMNS = (
    "client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale", "segment",
)
_ID = re.compile(r"^[\w.\-]+$")

TargetText = str | Mapping[str, str]


class Talk(NamedTuple):
    """A MuST-C talk: id (wav name without ``.wav``), speaker id and ``(waveform, src_text, tgt_text)`` segments."""

    talk_id: str
    speaker: str
    segments: Sequence[tuple[np.ndarray, str, TargetText]]


def mp3_supported() -> bool:
    """Whether the installed libsndfile can write MP3 (libsndfile >= 1.1)."""
    return "MP3" in sf.available_formats()


def _pcm16(waveform: np.ndarray, what: str) -> np.ndarray:
    w = np.asarray(waveform, dtype=np.float32)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D 16 kHz waveform, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{what}: waveform contains non-finite samples")
    return np.clip(np.round(w * 32768.0), -32768, 32767).astype(np.int16)


def _write_audio(path: Path, pcm: np.ndarray, fmt: str = "wav") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    if fmt == "mp3":
        sf.write(str(path), pcm.astype(np.float32) / 32768.0, SAMPLE_RATE, format="MP3", subtype="MPEG_LAYER_III")
    else:
        sf.write(str(path), pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{ln}\n" for ln in lines).encode("utf-8"))


def _text(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what}: expected str, got {type(text).__name__}")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what}: text contains a line break: {text!r}")
    return text


def _target(text: TargetText, lang: str, what: str) -> str | None:
    if isinstance(text, str):
        return _text(text, what)
    return None if lang not in text else _text(text[lang], f"{what} [{lang}]")


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{what}: {value!r} must match {_ID.pattern} (used in file names and yaml)")
    return value


def _concat(pieces: Sequence[np.ndarray], gap: int, what: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Concatenate PCM segments with ``gap`` zero samples around each; return audio and (start, length) spans."""
    silence = np.zeros(gap, np.int16)
    out, spans, pos = [silence], [], gap
    for i, wave in enumerate(pieces):
        pcm = _pcm16(wave, f"{what} segment {i}")
        spans.append((pos, len(pcm)))
        out += [pcm, silence]
        pos += len(pcm) + gap
    return np.concatenate(out), spans


def write_mustc(
    root: str | os.PathLike, pairs: str | Sequence[str], split: str, talks: Sequence[Talk], *, gap: float = 0.25
) -> list[Path]:
    """Write talks in the MuST-C layout for one or several directions.

    Writes ``<root>/<pair>/data/<split>/wav/<talk>.wav`` (segments concatenated
    with ``gap`` seconds of silence before, between and after them),
    ``txt/<split>.yaml`` (``- {duration: D, offset: O, rW: <words>, uW: 0,
    speaker_id: S, wav: <talk>.wav}``, one per line), ``txt/<split>.<src>`` and
    ``txt/<split>.<tgt>``.

    Args:
      root: corpus root.
      pairs: one direction (``"en-de"``) or several sharing the source language;
        the wav is written for the first and hard-linked into the others.
      split: split name, e.g. ``"train"`` or ``"tst-COMMON"``.
      talks: :class:`Talk` tuples; a segment's target text is a string or a
        ``{tgt_lang: text}`` dict (directions whose language is absent omit it).
      gap: silence in seconds around each segment.

    Returns:
      The yaml paths written, one per direction.
    """
    pairs = [pairs] if isinstance(pairs, str) else list(pairs)
    langs = [p.split("-") for p in pairs]
    if not pairs or any(len(lp) != 2 for lp in langs) or len({lp[0] for lp in langs}) != 1:
        raise ValueError(f"pairs must be 'src-tgt' directions sharing one source language, got {pairs}")
    src = langs[0][0]
    dirs = [Path(root) / p / "data" / split for p in pairs]
    yaml_lines: list[list[str]] = [[] for _ in pairs]
    src_lines: list[list[str]] = [[] for _ in pairs]
    tgt_lines: list[list[str]] = [[] for _ in pairs]
    for talk_id, speaker, segments in talks:
        _check_id(talk_id, "talk id")
        _check_id(speaker, f"speaker of talk {talk_id}")
        audio, spans = _concat([s[0] for s in segments], round(gap * SAMPLE_RATE), f"talk {talk_id}")
        wav = f"{talk_id}.wav"
        _write_audio(dirs[0] / "wav" / wav, audio)
        for d in dirs[1:]:
            _link_or_copy(dirs[0] / "wav" / wav, d / "wav" / wav)
        for (_, src_text, tgt_text), (start, length) in zip(segments, spans):
            what = f"talk {talk_id} segment at {start / SAMPLE_RATE:.3f}s"
            src_text = _text(src_text, what)
            for k, (_, tgt) in enumerate(langs):
                text = _target(tgt_text, tgt, what)
                if text is None:
                    continue
                yaml_lines[k].append(
                    f"- {{duration: {length / SAMPLE_RATE:.6f}, offset: {start / SAMPLE_RATE:.6f}, "
                    f"rW: {len(src_text.split())}, uW: 0, speaker_id: {speaker}, wav: {wav}}}"
                )
                src_lines[k].append(src_text)
                tgt_lines[k].append(text)
    out = []
    for k, (d, (_, tgt)) in enumerate(zip(dirs, langs)):
        _write_lines(d / "txt" / f"{split}.yaml", yaml_lines[k])
        _write_lines(d / "txt" / f"{split}.{src}", src_lines[k])
        _write_lines(d / "txt" / f"{split}.{tgt}", tgt_lines[k])
        (d / "wav").mkdir(parents=True, exist_ok=True)
        out.append(d / "txt" / f"{split}.yaml")
    return out


def _tsv_field(value: str) -> str:
    return _text(str(value), "TSV field").replace("\\", "\\\\").replace("\t", "\\\t")


def _write_tsv(path: Path, header: Sequence[str], rows: list[Sequence[str]]) -> None:
    _write_lines(path, ["\t".join(header)] + ["\t".join(_tsv_field(v) for v in row) for row in rows])


def write_covost2(
    root: str | os.PathLike,
    src: str,
    tgts: str | Sequence[str],
    rows: Sequence[tuple[str, np.ndarray, str, TargetText, str, str]],
    *,
    audio_format: str | None = None,
    split_files: bool = False,
) -> list[Path]:
    """Write clips and TSVs in the CoVoST 2 + Common Voice layout.

    Writes ``<root>/<src>/clips/<clip_id>.<ext>``, Common Voice's
    ``<root>/<src>/validated.tsv`` (columns :data:`COVOST_CV_COLUMNS`; votes
    2/0, demographics empty) and per target ``<root>/covost_v2.<src>_<tgt>.tsv``
    with columns ``path, sentence, translation, client_id, split``. With
    ``split_files`` also ``<root>/<src>_<tgt>/covost_v2.<src>_<tgt>.<split>.tsv``
    (``path, sentence, translation, client_id``; ``train`` includes
    ``train_covost`` rows), as CoVoST's ``get_covost_splits.py`` produces.

    Args:
      root: corpus root.
      src: source (speech) language code.
      tgts: target language code(s).
      rows: ``(clip_id, waveform, src_text, tgt_text, client_id, split)``;
        ``tgt_text`` a string or ``{tgt: text}``; ``split`` ``train``/``dev``/``test``
        (or ``train_covost``).
      audio_format: ``"mp3"`` (real Common Voice format; needs libsndfile >= 1.1,
        lossy but deterministic) or ``"wav"`` (16-bit PCM, lossless; the TSV
        ``path`` then names the ``.wav`` clip). Default: mp3 when supported.
      split_files: also write the per-split TSVs.

    Returns:
      The ``covost_v2.<src>_<tgt>.tsv`` paths written.
    """
    fmt = audio_format or ("mp3" if mp3_supported() else "wav")
    if fmt not in ("mp3", "wav"):
        raise ValueError(f"audio_format must be 'mp3' or 'wav', got {audio_format!r}")
    if fmt == "mp3" and not mp3_supported():
        raise ValueError("this libsndfile cannot write MP3 (needs >= 1.1); use audio_format='wav'")
    tgts = [tgts] if isinstance(tgts, str) else list(tgts)
    root = Path(root)
    cv_rows, covost = [], {t: [] for t in tgts}
    for clip_id, waveform, src_text, tgt_text, client_id, split in rows:
        name = f"{_check_id(clip_id, 'clip id')}.{fmt}"
        _write_audio(root / src / "clips" / name, _pcm16(waveform, f"clip {clip_id}"), fmt)
        src_text = _text(src_text, f"clip {clip_id}")
        cv_rows.append((client_id, name, src_text, "2", "0", "", "", "", src, ""))
        for t in tgts:
            text = _target(tgt_text, t, f"clip {clip_id}")
            if text is not None:
                covost[t].append((name, src_text, text, client_id, split))
    _write_tsv(root / src / "validated.tsv", COVOST_CV_COLUMNS, cv_rows)
    out = []
    for t, trows in covost.items():
        stem = f"covost_v2.{src}_{t}"
        _write_tsv(root / f"{stem}.tsv", ("path", "sentence", "translation", "client_id", "split"), trows)
        out.append(root / f"{stem}.tsv")
        if split_files:
            for split in ("train", "dev", "test"):
                wanted = {split, f"{split}_covost"} if split == "train" else {split}
                _write_tsv(
                    root / f"{src}_{t}" / f"{stem}.{split}.tsv",
                    ("path", "sentence", "translation", "client_id"),
                    [r[:4] for r in trows if r[4] in wanted],
                )
    return out


def write_europarl_st(
    root: str | os.PathLike,
    src: str,
    tgts: str | Sequence[str],
    split: str,
    audios: Sequence[tuple],
    *,
    gap: float = 0.25,
) -> list[Path]:
    """Write speeches in the Europarl-ST v1.1 layout.

    Writes ``<root>/<src>/audios/<audio_id>.wav`` (16-bit PCM; the release has
    ``.m4a``, which the reader also accepts but nothing here can encode) and,
    per target, ``<root>/<src>/<tgt>/<split>/segments.lst`` (``<audio_id>
    <start> <end>``), ``segments.<src>``, ``segments.<tgt>``, ``speeches.lst``,
    ``speeches.<src>``, ``speeches.<tgt>`` (segment texts joined by spaces) and,
    when every speech has a speaker, ``speakers.lst``.

    Args:
      root: corpus root.
      src: source (speech) language.
      tgts: target language(s).
      split: ``train``, ``dev``, ``test`` (or ``train-noisy``).
      audios: ``(audio_id, segments)`` or ``(audio_id, segments, speaker)``
        with segments ``(waveform, src_text, tgt_text)``; ``tgt_text`` a string
        or ``{tgt: text}``.
      gap: silence in seconds around each segment.

    Returns:
      The ``segments.lst`` paths written, one per target.
    """
    tgts = [tgts] if isinstance(tgts, str) else list(tgts)
    root = Path(root)
    files = {t: {k: [] for k in ("lst", "src", "tgt", "speeches", "speech_src", "speech_tgt", "speakers")} for t in tgts}
    with_speakers = all(len(a) > 2 and a[2] for a in audios)
    for entry in audios:
        audio_id, segments = _check_id(entry[0], "audio id"), entry[1]
        audio, spans = _concat([s[0] for s in segments], round(gap * SAMPLE_RATE), f"speech {audio_id}")
        _write_audio(root / src / "audios" / f"{audio_id}.wav", audio)
        for t in tgts:
            f = files[t]
            texts = []
            for (_, src_text, tgt_text), (start, length) in zip(segments, spans):
                what = f"speech {audio_id} segment at {start / SAMPLE_RATE:.3f}s"
                text = _target(tgt_text, t, what)
                if text is None:
                    continue
                f["lst"].append(f"{audio_id} {start / SAMPLE_RATE:.6f} {(start + length) / SAMPLE_RATE:.6f}")
                texts.append((_text(src_text, what), text))
                f["src"].append(texts[-1][0])
                f["tgt"].append(text)
            if texts:
                f["speeches"].append(audio_id)
                f["speech_src"].append(" ".join(s for s, _ in texts))
                f["speech_tgt"].append(" ".join(x for _, x in texts))
                if with_speakers:
                    f["speakers"].append(_check_id(entry[2], f"speaker of {audio_id}"))
    out = []
    for t, f in files.items():
        d = root / src / t / split
        for name, key in (
            ("segments.lst", "lst"), (f"segments.{src}", "src"), (f"segments.{t}", "tgt"),
            ("speeches.lst", "speeches"), (f"speeches.{src}", "speech_src"), (f"speeches.{t}", "speech_tgt"),
        ):
            _write_lines(d / name, f[key])
        if with_speakers:
            _write_lines(d / "speakers.lst", f["speakers"])
        out.append(d / "segments.lst")
    return out
