"""Readers for the MuST-C, CoVoST 2 and Europarl-ST on-disk layouts.

Every reader yields :class:`Utterance` records (an audio file plus a segment
``[offset, offset + duration)`` in seconds, speaker/talk ids and both texts),
so training code and the TFDS builders treat real and synthetic corpora alike.

Layouts read:

* **MuST-C** (v1/v1.2/v2): ``<root>/<pair>/data/<split>/wav/<talk>.wav`` holds
  whole talks; ``<root>/<pair>/data/<split>/txt/<split>.yaml`` is a list of
  ``{duration, offset, rW, uW, speaker_id, wav}`` entries aligned line by line
  with ``<split>.<src>`` and ``<split>.<tgt>``. Splits: ``train``, ``dev``,
  ``tst-COMMON``, ``tst-HE``. Ids are ``<talk>_<i>`` with ``i`` the segment's
  rank by offset within its talk (as in fairseq's ``prep_mustc_data.py``).
* **CoVoST 2**: split TSVs ``covost_v2.<src>_<tgt>.<split>.tsv`` (columns
  ``path, sentence, translation, client_id``, as written by CoVoST's
  ``get_covost_splits.py``) looked up in ``<root>/<src>_<tgt>/``, ``<root>/``
  and ``<root>/<src>/``; otherwise the release TSV ``covost_v2.<src>_<tgt>.tsv``
  (needs ``path, translation, split``; ``sentence``/``client_id`` come from
  Common Voice's ``<root>/<src>/validated.tsv`` when absent). ``train`` also
  takes rows marked ``train_covost``. Clips are ``<root>/<src>/clips/<path>``.
  TSVs are tab-separated without quoting, ``\\`` escaping (pandas
  ``quoting=QUOTE_NONE, escapechar="\\\\"``, as CoVoST writes them).
* **Europarl-ST** (v1.1): ``<root>/<src>/<tgt>/<split>/segments.lst`` (lines
  ``<audio_id> <start> <end>``) aligned with ``segments.<src>`` and
  ``segments.<tgt>``; optional ``speeches.lst`` + ``speakers.lst`` give
  speakers. Audio is ``<root>/<src>/audios/<audio_id>.m4a``; a converted
  ``<audio_id>.wav``/``.flac`` beside it, or ``audios/wav/<audio_id>.wav``
  (fairseq's conversion), is preferred when present.

Error policy: problems with the files as a whole (missing files, line counts
that differ, non-UTF-8 text, malformed YAML/TSV/lst lines, an audio format no
installed decoder reads) raise ``ValueError`` naming the file (and line).
Problems with single utterances (empty text, a segment past the end of its
audio, missing or unreadable audio, a non-positive duration) are skipped and
counted in a :class:`SkipReport`, or raise with ``on_bad_utterance="raise"``.
A reader given no report logs its own summary once exhausted.

``mustc_files``, ``covost2_files`` and ``europarl_st_files`` list the files a
reader reads for one split (without opening audio), for fingerprinting a
prepared data set.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import yaml

from mlst_jax.data.segments import END_TOLERANCE, AudioDecoderUnavailable, probe_audio

__all__ = [
    "Utterance",
    "SkipReport",
    "MUSTC_SPLITS",
    "read_mustc",
    "read_covost2",
    "read_europarl_st",
    "mustc_files",
    "covost2_files",
    "europarl_st_files",
    "read_text_lines",
]

logger = logging.getLogger(__name__)

MUSTC_SPLITS = ("train", "dev", "tst-COMMON", "tst-HE")

_FLOW_ENTRY = re.compile(r"^-\s*\{(.*)\}\s*$")


@dataclass(frozen=True)
class Utterance:
    """One speech-translation example: a segment of an audio file with its texts."""

    id: str
    audio_path: str
    offset: float
    duration: float
    speaker: str
    talk: str
    src_lang: str
    tgt_lang: str
    src_text: str
    tgt_text: str


@dataclass
class SkipReport:
    """Utterances skipped by a reader or builder: counts per reason and the first few messages."""

    max_examples: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, message: str) -> None:
        """Count one skipped utterance under ``reason``, keeping ``message`` among the first examples."""
        self.counts[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < self.max_examples:
            kept.append(message)

    def merge(self, other: "SkipReport") -> None:
        """Add the counts and examples of ``other`` to this report."""
        for reason, n in other.counts.items():
            self.counts[reason] += n
            kept = self.examples.setdefault(reason, [])
            kept.extend(other.examples.get(reason, [])[: self.max_examples - len(kept)])

    @property
    def total(self) -> int:
        """Number of skipped utterances."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """Multi-line human-readable summary (``"no utterances skipped"`` when empty)."""
        if not self.total:
            return "no utterances skipped"
        lines = [f"skipped {self.total} utterance(s):"]
        for reason, n in sorted(self.counts.items()):
            lines.append(f"  {reason}: {n}")
            lines.extend(f"    e.g. {m}" for m in self.examples.get(reason, []))
        return "\n".join(lines)

    def log(self, log: logging.Logger | None = None, context: str = "") -> None:
        """Log the summary as a warning when anything was skipped."""
        if self.total:
            (log or logger).warning("%s%s", f"{context}: " if context else "", self.summary())


class _BadAudio(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file, split on ``\\n`` only, without line ends.

    Raises:
      ValueError: ``"<path>:<line>: not valid UTF-8 ..."`` for undecodable bytes;
        FileNotFoundError when the file is missing.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ValueError(f"{path}: {what} not found")
    return path


def _aligned_texts(anchor: Path, n: int, paths: list[Path]) -> list[list[str]]:
    out = []
    for p in paths:
        lines = read_text_lines(_require(p, "text file"))
        if len(lines) != n:
            raise ValueError(f"line counts differ: {anchor} has {n} segments but {p} has {len(lines)} lines")
        out.append([ln.strip() for ln in lines])
    return out


class _Checker:
    """Applies the per-utterance checks and the skip policy, caching audio probes."""

    def __init__(self, report: SkipReport | None, policy: str, context: str):
        if policy not in ("skip", "raise"):
            raise ValueError(f"on_bad_utterance must be 'skip' or 'raise', got {policy!r}")
        self.own_report = report is None
        self.report = SkipReport() if report is None else report
        self.policy = policy
        self.context = context
        self._probes: dict[str, float | _BadAudio] = {}

    def skip(self, reason: str, message: str) -> None:
        if self.policy == "raise":
            raise ValueError(message)
        self.report.add(reason, message)

    def file_duration(self, path: str) -> float:
        if path not in self._probes:
            if not os.path.isfile(path):
                self._probes[path] = _BadAudio("missing_audio", f"missing audio file {path}")
            else:
                try:
                    frames, sr = probe_audio(path)
                    self._probes[path] = frames / sr
                except AudioDecoderUnavailable:
                    raise
                except ValueError as e:
                    self._probes[path] = _BadAudio("unreadable_audio", str(e))
        result = self._probes[path]
        if isinstance(result, _BadAudio):
            raise result
        return result

    def check(self, utt: Utterance, where: str, whole_file: bool = False) -> Utterance | None:
        """Return ``utt`` (spanning its whole file if ``whole_file``), or None after skipping it."""
        for side, text in (("source", utt.src_text), ("target", utt.tgt_text)):
            if not text:
                self.skip("empty_text", f"{where}: empty {side} text")
                return None
        try:
            total = self.file_duration(utt.audio_path)
        except _BadAudio as e:
            self.skip(e.reason, f"{where}: {e}")
            return None
        if whole_file:
            utt = replace(utt, offset=0.0, duration=total)
        if utt.offset < 0 or utt.duration <= 0:
            self.skip("invalid_segment", f"{where}: invalid segment offset={utt.offset} duration={utt.duration}")
            return None
        end = utt.offset + utt.duration
        if end > total + END_TOLERANCE:
            self.skip("past_end", f"{where}: segment ends at {end:.3f}s, past the end of {utt.audio_path} ({total:.3f}s)")
            return None
        return utt

    def finish(self) -> None:
        if self.own_report:
            self.report.log(context=self.context)


def _split_pair(pair: str, sep: str) -> tuple[str, str]:
    parts = pair.split(sep)
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"language pair must look like 'en{sep}de', got {pair!r}")
    return parts[0], parts[1]


def _parse_float(value: str, path: Path, line: int, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}:{line}: {key} is not a number: {value!r}") from None


def _yaml_entries(path: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line, {key: raw value})`` per segment; flow-style lines parsed fast, other YAML via PyYAML."""
    lines = read_text_lines(path)
    entries = []
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#") or s == "---":
            continue
        if not s.startswith("-") or not s[1:].lstrip().startswith("{"):
            return _compose_yaml(path, "\n".join(lines))
        m = _FLOW_ENTRY.match(s)
        if m is None:
            raise ValueError(f"{path}:{i}: malformed segment entry {s!r}")
        entry = {}
        for item in m.group(1).split(","):
            key, sep, value = item.partition(":")
            if not sep or not key.strip():
                raise ValueError(f"{path}:{i}: malformed segment entry {s!r}")
            entry[key.strip()] = value.strip().strip("'\"")
        entries.append((i, entry))
    return entries


def _compose_yaml(path: Path, text: str) -> list[tuple[int, dict[str, str]]]:
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: malformed YAML ({getattr(e, 'problem', None) or e})") from None
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise ValueError(f"{path}:{root.start_mark.line + 1}: expected a YAML list of segments")
    entries = []
    for node in root.value:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode) or not all(
            isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode) for k, v in node.value
        ):
            raise ValueError(f"{path}:{line}: expected a mapping of scalars (offset, duration, speaker_id, wav)")
        entries.append((line, {k.value: v.value for k, v in node.value}))
    return entries


def read_mustc(
    root: str | os.PathLike,
    pair: str,
    split: str,
    *,
    report: SkipReport | None = None,
    on_bad_utterance: str = "skip",
) -> Iterator[Utterance]:
    """Yield the utterances of one MuST-C direction and split.

    Args:
      root: folder holding ``<pair>/data/<split>/{wav,txt}``.
      pair: direction such as ``"en-de"``.
      split: ``"train"``, ``"dev"``, ``"tst-COMMON"`` or ``"tst-HE"`` (any folder name works).
      report: collects skipped utterances; when None the reader logs its own summary.
      on_bad_utterance: ``"skip"`` (count and continue) or ``"raise"``.

    Yields talks in order of first appearance, segments sorted by offset.

    Raises:
      ValueError: for a missing yaml or text file, line counts that differ between the yaml and text
        files, non-UTF-8 text or malformed yaml entries (``file:line``).
    """
    checker = _Checker(report, on_bad_utterance, f"MuST-C {pair} {split}")
    src, tgt = _split_pair(pair, "-")
    base = Path(root) / pair / "data" / split
    yaml_path = _require(base / "txt" / f"{split}.yaml", "MuST-C segment list")
    segments = []
    for line, e in _yaml_entries(yaml_path):
        for key in ("offset", "duration", "wav"):
            if key not in e:
                raise ValueError(f"{yaml_path}:{line}: segment lacks {key!r}")
        offset = _parse_float(e["offset"], yaml_path, line, "offset")
        duration = _parse_float(e["duration"], yaml_path, line, "duration")
        segments.append((line, e["wav"], offset, duration, e.get("speaker_id", "")))
    text_paths = [base / "txt" / f"{split}.{src}", base / "txt" / f"{split}.{tgt}"]
    src_lines, tgt_lines = _aligned_texts(yaml_path, len(segments), text_paths)
    groups: dict[str, list[int]] = {}
    for idx, seg in enumerate(segments):
        groups.setdefault(seg[1], []).append(idx)
    for wav, idxs in groups.items():
        idxs.sort(key=lambda i: segments[i][2])
        talk = os.path.splitext(wav)[0]
        for rank, idx in enumerate(idxs):
            line, _, offset, duration, speaker = segments[idx]
            utt = Utterance(
                id=f"{talk}_{rank}", audio_path=str(base / "wav" / wav), offset=offset, duration=duration,
                speaker=speaker, talk=talk, src_lang=src, tgt_lang=tgt,
                src_text=src_lines[idx], tgt_text=tgt_lines[idx],
            )
            utt = checker.check(utt, f"{yaml_path}:{line} ({talk}_{rank})")
            if utt is not None:
                yield utt
    checker.finish()


def mustc_files(root: str | os.PathLike, pair: str, split: str) -> list[Path]:
    """The files :func:`read_mustc` reads for one direction and split: the yaml, both texts and the talks' wavs."""
    src, tgt = _split_pair(pair, "-")
    base = Path(root) / pair / "data" / split
    wav = base / "wav"
    talks = sorted(wav / e.name for e in os.scandir(wav) if e.is_file()) if wav.is_dir() else []
    return [base / "txt" / f"{split}.{ext}" for ext in ("yaml", src, tgt)] + talks


def _read_tsv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    lines = read_text_lines(path)
    if not lines:
        raise ValueError(f"{path}: empty TSV file (expected a header with {', '.join(required)})")
    header = lines[0].split("\t")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}:1: TSV header lacks column(s) {missing} (header: {header})")
    rows = []
    for i, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        if "\\" in line:
            fields = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))
        else:
            fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{i}: expected {len(header)} tab-separated fields, got {len(fields)}")
        rows.append((i, dict(zip(header, fields))))
    return rows


def _first_file(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _covost_tsv(root: Path, src: str, tgt: str, split: str) -> tuple[Path, bool]:
    """The TSV holding a split's rows and whether it is a per-split TSV (else the release TSV)."""
    stem = f"covost_v2.{src}_{tgt}"
    dirs = [root / f"{src}_{tgt}", root, root / src]
    split_tsv = _first_file([d / f"{stem}.{split}.tsv" for d in dirs])
    if split_tsv is not None:
        return split_tsv, True
    full_tsv = _first_file([d / f"{stem}.tsv" for d in dirs])
    if full_tsv is None:
        raise ValueError(
            f"{root} is not a CoVoST 2 release for {src}->{tgt}: no {stem}.tsv or {stem}.{split}.tsv in "
            f"{', '.join(str(d) for d in dirs)}"
        )
    return full_tsv, False


def _covost_split_rows(tsv: Path, split: str) -> list[tuple[int, dict[str, str]]]:
    wanted = {split, f"{split}_covost"} if split == "train" else {split}
    return [(i, r) for i, r in _read_tsv(tsv, ("path", "translation", "split")) if r["split"] in wanted]


def _joins_validated(rows: list[tuple[int, dict[str, str]]]) -> bool:
    """Whether release TSV rows take their sentence and client_id from Common Voice's ``validated.tsv``."""
    return bool(rows) and not {"sentence", "client_id"} <= rows[0][1].keys()


def _covost_rows(root: Path, src: str, tgt: str, split: str) -> tuple[list[tuple[str, dict[str, str]]], list[str]]:
    """``(where, row)`` pairs with keys path/sentence/translation/client_id, plus rows lacking a transcript."""
    tsv, per_split = _covost_tsv(root, src, tgt, split)
    if per_split:
        rows = _read_tsv(tsv, ("path", "sentence", "translation"))
        return [(f"{tsv}:{i}", r) for i, r in rows], []
    rows = _covost_split_rows(tsv, split)
    lacking = []
    if _joins_validated(rows):
        cv_tsv = _require(root / src / "validated.tsv", "Common Voice validated.tsv (for sentence/client_id)")
        cv = {r["path"]: r for _, r in _read_tsv(cv_tsv, ("path", "sentence", "client_id"))}
        joined = []
        for i, r in rows:
            if r["path"] in cv:
                joined.append((i, {**cv[r["path"]], **{k: r[k] for k in ("path", "translation")}}))
            else:
                lacking.append(f"{tsv}:{i}: clip {r['path']} is not in {cv_tsv}")
        rows = joined
    return [(f"{tsv}:{i}", r) for i, r in rows], lacking


def read_covost2(
    root: str | os.PathLike,
    src: str,
    tgt: str,
    split: str,
    *,
    report: SkipReport | None = None,
    on_bad_utterance: str = "skip",
) -> Iterator[Utterance]:
    """Yield the CoVoST 2 utterances of one direction and split (``train``, ``dev``, ``test``).

    Args:
      root: folder holding the TSVs (see the module docstring for where they are
        looked up) and the Common Voice ``<src>/clips`` folder.
      src, tgt: Common Voice / CoVoST language codes, e.g. ``"en"``, ``"de"``, ``"zh-CN"``.
      split: ``"train"`` (also takes ``train_covost`` rows), ``"dev"`` or ``"test"``.
      report, on_bad_utterance: as for :func:`read_mustc`.

    Each clip is one utterance: ``offset`` 0, ``duration`` the clip length,
    ``speaker`` the Common Voice ``client_id``, ``talk`` and ``id`` the clip
    name without extension. Clips missing from ``validated.tsv`` are skipped
    (``missing_transcript``).
    """
    checker = _Checker(report, on_bad_utterance, f"CoVoST 2 {src}-{tgt} {split}")
    root = Path(root)
    rows, lacking = _covost_rows(root, src, tgt, split)
    for message in lacking:
        checker.skip("missing_transcript", message)
    clips = root / src / "clips"
    for where, r in rows:
        clip_id = os.path.splitext(r["path"])[0]
        utt = Utterance(
            id=clip_id, audio_path=str(clips / r["path"]), offset=0.0, duration=0.0,
            speaker=r.get("client_id", ""), talk=clip_id, src_lang=src, tgt_lang=tgt,
            src_text=r["sentence"].strip(), tgt_text=r["translation"].strip(),
        )
        utt = checker.check(utt, where, whole_file=True)
        if utt is not None:
            yield utt
    checker.finish()


def covost2_files(root: str | os.PathLike, src: str, tgt: str, split: str) -> list[Path]:
    """The files :func:`read_covost2` reads for one direction and split: the TSV (and ``validated.tsv`` when it
    is joined) and the clips the split's rows name."""
    root = Path(root)
    tsv, per_split = _covost_tsv(root, src, tgt, split)
    files = [tsv]
    if per_split:
        rows = _read_tsv(tsv, ("path",))
    else:
        rows = _covost_split_rows(tsv, split)
        if _joins_validated(rows):
            files.append(root / src / "validated.tsv")
    clips = root / src / "clips"
    return files + [clips / r["path"] for _, r in rows]


def _europarl_audio(audios: Path, audio_id: str) -> str:
    for name in (f"{audio_id}.wav", f"{audio_id}.flac", f"wav/{audio_id}.wav", f"{audio_id}.m4a"):
        if (audios / name).is_file():
            return str(audios / name)
    return str(audios / f"{audio_id}.m4a")


def read_europarl_st(
    root: str | os.PathLike,
    src: str,
    tgt: str,
    split: str,
    *,
    report: SkipReport | None = None,
    on_bad_utterance: str = "skip",
) -> Iterator[Utterance]:
    """Yield the Europarl-ST utterances of one direction and split (``train``, ``dev``, ``test``, ``train-noisy``).

    Args:
      root: folder holding ``<src>/audios`` and ``<src>/<tgt>/<split>``.
      src, tgt: language codes, e.g. ``"en"``, ``"de"``.
      split: split folder name.
      report, on_bad_utterance: as for :func:`read_mustc`.

    Ids are ``<audio_id>_<i>`` (rank by start time within the speech, as in
    fairseq); ``talk`` is the audio id; ``speaker`` comes from ``speakers.lst``
    (aligned with ``speeches.lst``) when both exist, else is empty.

    Raises:
      AudioDecoderUnavailable: when an ``.m4a`` file is needed and cannot be decoded
        (convert it to ``.wav`` beside the original; see the message).
      ValueError: as for :func:`read_mustc`, for ``segments.lst``.
    """
    checker = _Checker(report, on_bad_utterance, f"Europarl-ST {src}-{tgt} {split}")
    base = Path(root) / src / tgt / split
    lst = _require(base / "segments.lst", "Europarl-ST segment list")
    segments = []
    for i, line in enumerate(read_text_lines(lst), 1):
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{lst}:{i}: expected '<audio_id> <start> <end>', got {line!r}")
        start = _parse_float(parts[1], lst, i, "start")
        segments.append((i, parts[0], start, _parse_float(parts[2], lst, i, "end") - start))
    src_lines, tgt_lines = _aligned_texts(lst, len(segments), [base / f"segments.{src}", base / f"segments.{tgt}"])
    speakers: dict[str, str] = {}
    if (base / "speeches.lst").is_file() and (base / "speakers.lst").is_file():
        speeches = [s.strip() for s in read_text_lines(base / "speeches.lst")]
        (who,) = _aligned_texts(base / "speeches.lst", len(speeches), [base / "speakers.lst"])
        speakers = dict(zip(speeches, who))
    groups: dict[str, list[int]] = {}
    for idx, seg in enumerate(segments):
        groups.setdefault(seg[1], []).append(idx)
    audios = Path(root) / src / "audios"
    for audio_id, idxs in groups.items():
        idxs.sort(key=lambda i: segments[i][2])
        path = _europarl_audio(audios, audio_id)
        for rank, idx in enumerate(idxs):
            line, _, start, duration = segments[idx]
            utt = Utterance(
                id=f"{audio_id}_{rank}", audio_path=path, offset=start, duration=duration,
                speaker=speakers.get(audio_id, ""), talk=audio_id, src_lang=src, tgt_lang=tgt,
                src_text=src_lines[idx], tgt_text=tgt_lines[idx],
            )
            utt = checker.check(utt, f"{lst}:{line} ({audio_id}_{rank})")
            if utt is not None:
                yield utt
    checker.finish()


def europarl_st_files(root: str | os.PathLike, src: str, tgt: str, split: str) -> list[Path]:
    """The files :func:`read_europarl_st` reads for one direction and split: the segment list, both texts, the
    speaker lists when present and the audio of every speech the list names."""
    base = Path(root) / src / tgt / split
    lst = base / "segments.lst"
    files = [lst, base / f"segments.{src}", base / f"segments.{tgt}"]
    files += [p for p in (base / "speeches.lst", base / "speakers.lst") if p.is_file()]
    ids = dict.fromkeys(line.split()[0] for line in read_text_lines(lst) if line.strip()) if lst.is_file() else {}
    audios = Path(root) / src / "audios"
    return files + [Path(_europarl_audio(audios, audio_id)) for audio_id in ids]

