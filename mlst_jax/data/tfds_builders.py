"""TFDS builders for MuST-C, CoVoST 2 and Europarl-ST that build and read without TensorFlow.

``tfds.core.GeneratorBasedBuilder`` with ``file_format="array_record"`` (the
default here; tfds' own default, TFRecord, needs TensorFlow to write) encodes
``Text``, ``Scalar`` and ``Tensor`` features with numpy and writes ArrayRecord
shards, and ``builder.as_data_source(split)`` reads them back as numpy dicts
(text features come back as ``bytes``), so no TensorFlow is needed. Two parts
of tfds do need TensorFlow and are avoided: ``tfds.features.Audio`` (its
decoder calls ``tf.dtypes``), hence audio is a ``Tensor(shape=(None,),
dtype=int16)`` at 16 kHz; and ``dataset_info_from_configs`` (it reads package
metadata files), hence ``tfds.core.DatasetInfo`` is built directly. A split
over 1 GB makes the tfds shuffler spill into bucket files through
``tf.io.gfile``; without TensorFlow, :func:`prepare` lets it write plain files.

Features: ``id, talk, speaker, src_lang, tgt_lang, src_text, tgt_text``
(text), ``n_frames`` (int32) and either ``audio`` (int16 [samples], 16 kHz
mono, ``round(x * 32768)``) or ``fbank`` (float16 [frames, 80], Kaldi
log-mel without CMVN); ``n_frames`` counts samples or fbank frames.

Configs: ``<pair>`` (audio) and ``<pair>.fbank`` for every pair, plus MuST-C
``multilingual``/``multilingual.fbank`` (every ``en-*`` direction found in the
manual dir; example keys ``<pair>/<id>``). MuST-C pairs are ``en-xx``,
CoVoST 2 pairs ``xx_yy`` (its file naming), Europarl-ST pairs ``xx-yy``.

Split names must be identifiers (attribute/kwarg-safe and accepted by every
tfds split parser), so ``-`` becomes ``_``: MuST-C ``tst-COMMON`` ->
``tst_COMMON``, ``tst-HE`` -> ``tst_HE``, Europarl-ST ``train-noisy`` ->
``train_noisy``. Only splits present in the manual dir are built. Skipped
utterances are kept in ``builder.skip_reports`` and logged per split once the
build has finished, after one warning counting the audio files that were
down-mixed or resampled.

Prepared data records what it was made from: ``mlst_source.json`` beside the
ArrayRecords holds the builder version and the size and mtime of every source
file (stat only; audio is not hashed). ``download_and_prepare`` with a manual
dir rebuilds prepared data whose source files changed since, with a one-line
warning naming the config and what changed; unchanged data is reused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import types
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from mlst_jax.audio.fbank import fbank
from mlst_jax.audio.io import SAMPLE_RATE, count_conversions
from mlst_jax.data.layouts import (
    MUSTC_SPLITS,
    SkipReport,
    Utterance,
    covost2_files,
    europarl_st_files,
    mustc_files,
    read_covost2,
    read_europarl_st,
    read_mustc,
)
from mlst_jax.data.segments import load_segment

__all__ = [
    "STConfig", "MustC", "CoVoST2", "EuroparlST", "prepare", "prepared_builder", "tfds_split_name", "BUILDERS",
    "SOURCE_FILE", "source_digest",
]

logger = logging.getLogger(__name__)

MUSTC_TARGETS = ("de", "es", "fr", "it", "nl", "pt", "ro", "ru", "ar", "cs", "fa", "tr", "vi", "zh")
COVOST_XX_EN = (
    "fr", "de", "es", "ca", "it", "ru", "zh-CN", "pt", "fa", "et", "mn",
    "nl", "tr", "ar", "sv-SE", "lv", "sl", "ta", "ja", "id", "cy",
)
COVOST_EN_XX = ("de", "tr", "fa", "sv-SE", "mn", "zh-CN", "cy", "ca", "sl", "et", "id", "ar", "ta", "lv", "ja")
# the synthetic corpus writes X->en and en->X for its 8 non-English languages in the CoVoST 2 layout
SYNTHETIC_LANGS = ("de", "es", "fr", "it", "nl", "pt", "ro", "ru")
EUROPARL_LANGS = ("en", "fr", "de", "it", "es", "pt", "pl", "ro", "nl")
MIN_FBANK_SAMPLES = 400
TEXT_FEATURES = ("id", "talk", "speaker", "src_lang", "tgt_lang", "src_text", "tgt_text")
_COVOST_TSV = re.compile(r"covost_v2\.([^._]+)_([^._]+)(\.[a-z]+)?\.tsv")
SOURCE_FILE = "mlst_source.json"
"""The record, beside a config's ArrayRecords, of the source files it was built from."""


class _NoUnpreparedVariantWarning(logging.Filter):
    """Drops tfds' "Variant folder ... has no dataset_info.json": ``is_prepared()`` says it of every config not
    prepared yet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "Variant folder %s has no %s" and record.args[-1:] == ("dataset_info.json",))


logging.getLogger("absl").addFilter(_NoUnpreparedVariantWarning())


class _ResourceExhausted(OSError):
    message = ""


# The part of TensorFlow the tfds shuffler uses for its bucket files: open, test and delete local files.
_LOCAL_FILES_AS_TF = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(GFile=open, exists=os.path.exists, remove=os.remove)),
    errors=types.SimpleNamespace(ResourceExhaustedError=_ResourceExhausted),
)


@contextlib.contextmanager
def _local_shuffle_buckets():
    """Without TensorFlow, the tfds shuffler writes the buckets of a split over 1 GB as plain local files."""
    if importlib.util.find_spec("tensorflow") is not None:
        yield
        return
    from tensorflow_datasets.core import shuffle

    saved, shuffle.tf = shuffle.tf, _LOCAL_FILES_AS_TF
    try:
        yield
    finally:
        shuffle.tf = saved


@contextlib.contextmanager
def _no_gcs_metadata():
    """A builder whose data is not prepared yet would look up precomputed metadata on GCS (off by default) and
    leave an empty ``/tmp/tmp*tfds`` folder behind each time; nothing is on GCS for these builders."""
    from tensorflow_datasets.core import dataset_info

    saved = dataset_info.DatasetInfo.initialize_from_bucket
    dataset_info.DatasetInfo.initialize_from_bucket = lambda self: None
    try:
        yield
    finally:
        dataset_info.DatasetInfo.initialize_from_bucket = saved


def tfds_split_name(split: str) -> str:
    """TFDS split name of a corpus split: ``-`` becomes ``_`` (``tst-COMMON`` -> ``tst_COMMON``)."""
    return split.replace("-", "_")


@dataclasses.dataclass(eq=False)
class STConfig(tfds.core.BuilderConfig):
    """Builder config: language ``pairs`` (empty: all found) and ``features`` (``"audio"`` or ``"fbank"``)."""

    pairs: tuple[str, ...] = ()
    features: str = "audio"


def _configs(pairs: list[str], multilingual: bool = False) -> list[STConfig]:
    names = [(p, (p,)) for p in pairs] + ([("multilingual", ())] if multilingual else [])
    return [
        STConfig(name=name + ("" if kind == "audio" else ".fbank"), pairs=ps, features=kind,
                 description=f"{'all directions' if not ps else ps[0]}, {kind} features")
        for name, ps in names
        for kind in ("audio", "fbank")
    ]


# Arrays are stored as their raw bytes: tfds' default encoding writes an int64 per int16 sample (or a float per
# float16 value) and serializing those lists took most of the preparation time.
_RAW = tfds.features.Encoding.BYTES


def _features(kind: str) -> tfds.features.FeaturesDict:
    feats = {k: tfds.features.Text() for k in TEXT_FEATURES}
    if kind == "audio":
        feats["audio"] = tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding=_RAW)
    elif kind == "fbank":
        feats["fbank"] = tfds.features.Tensor(shape=(None, 80), dtype=np.float16, encoding=_RAW)
    else:
        raise ValueError(f"features must be 'audio' or 'fbank', got {kind!r}")
    feats["n_frames"] = tfds.features.Scalar(dtype=np.int32)
    return tfds.features.FeaturesDict(feats)


class _Source(NamedTuple):
    """One reader of a split: the example-key prefix, the reader (``report``/``on_bad_utterance`` kwargs) and the
    files it reads."""

    prefix: str
    read: Callable[..., Iterator[Utterance]]
    files: Callable[[], list[Path]]


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


class _SpeechTranslation(tfds.core.GeneratorBasedBuilder):
    """Shared generation: read utterances, load their audio, encode audio or fbank; record the source files."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "Audio and fbank arrays stored as raw bytes."}
    HOMEPAGE = ""
    DESCRIPTION = ""
    SPLITS: tuple[str, ...] = ()  # the corpus's split names, in order

    def __init__(self, *, on_bad_utterance: str = "skip", file_format: str = "array_record", **kwargs):
        self.on_bad_utterance = on_bad_utterance
        self.skip_reports: dict[str, SkipReport] = {}
        self.empty_splits: list[str] = []
        self.built = False  # whether download_and_prepare built the data (else it was there and up to date)
        self._fingerprint: dict | None = None
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=_features(self.builder_config.features),
            homepage=self.HOMEPAGE,
        )

    @property
    def full_config_name(self) -> str:
        """``<dataset>/<config>``, e.g. ``mustc/en-de``."""
        return f"{self.name}/{self.builder_config.name}"

    def corpus_splits(self) -> list[str]:
        """The prepared splits under their corpus names (``tst-COMMON``, not the TFDS name ``tst_COMMON``)."""
        built = set(self.info.splits.keys())
        return [s for s in self.SPLITS if tfds_split_name(s) in built]

    def _pair(self) -> str:
        if len(self.builder_config.pairs) != 1:
            raise ValueError(f"{self.name} config {self.builder_config.name!r} needs exactly one pair")
        return self.builder_config.pairs[0]

    def _sources(self, root: Path) -> dict[str, list[_Source]]:
        """``{corpus split: readers}`` of the splits present under the manual dir ``root``."""
        raise NotImplementedError

    @classmethod
    def directions(cls, root: str | os.PathLike) -> list[str]:
        """The names of the per-direction configs (audio features) whose files are in the manual dir ``root``."""
        known = {c.name for c in cls.BUILDER_CONFIGS}
        return sorted(p for p in cls._found_pairs(Path(root)) if p in known)

    @classmethod
    def _found_pairs(cls, root: Path) -> set[str]:
        raise NotImplementedError

    def source_fingerprint(self, root: str | os.PathLike) -> dict:
        """The builder version and ``{split: {path relative to root: [size, mtime_ns] or None}}`` of the files the
        splits are read from (None: missing)."""
        root = Path(root)
        splits = {
            split: {os.path.relpath(p, root): _stat(p) for s in sources for p in s.files()}
            for split, sources in self._sources(root).items()
        }
        return {"builder": self.full_config_name, "version": str(self.version), "splits": splits}

    def source_change(self, root: str | os.PathLike) -> str | None:
        """Why the prepared data may not match the source under ``root`` any more, or None when it matches or the
        source is not there to compare with (logged at INFO level)."""
        record = Path(self.data_dir) / SOURCE_FILE
        if not record.is_file():
            return f"it has no record of its source files ({SOURCE_FILE})"
        try:
            old = json.loads(record.read_text())
        except ValueError:
            return f"its record of its source files ({SOURCE_FILE}) is unreadable"
        try:
            new = self.source_fingerprint(root)
        except (ValueError, OSError) as e:
            logger.info("%s: not checked against %s, which does not hold its source (%s)",
                        self.full_config_name, root, e)
            return None
        if old.get("version") != new["version"]:
            return f"it was built by builder version {old.get('version')}, this is {new['version']}"
        changes = []
        before, after = old["splits"], new["splits"]
        for split in [s for s in self.SPLITS if s in before.keys() | after.keys()]:
            if split not in before:
                changes.append(f"split {split} is new")
            elif split not in after:
                changes.append(f"split {split} is gone")
            else:
                paths = before[split].keys() | after[split].keys()
                if diff := sorted(p for p in paths if before[split].get(p) != after[split].get(p)):
                    changes.append(f"{split}: {len(diff)} of {len(paths)} files changed, e.g. {Path(root) / diff[0]}")
        return f"its source changed since it was built ({'; '.join(changes)})" if changes else None

    def download_and_prepare(self, *, download_config: tfds.download.DownloadConfig | None = None, **kwargs):
        """tfds' ``download_and_prepare``, which also rebuilds prepared data whose source files (under
        ``download_config.manual_dir``) changed since, with a warning, and logs one summary of the audio files
        down-mixed or resampled and then the skipped utterances once the build has finished."""
        config = download_config or tfds.download.DownloadConfig()
        manual, self.built = config.manual_dir, False
        if manual is not None and not config.download_mode.overwrite_dataset and self.is_prepared():
            change = self.source_change(manual)
            if change is None:
                return
            logger.warning("%s: rebuilding %s: %s", self.full_config_name, self.data_dir, change)
            config = config.replace(download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
        if manual is not None and not (Path(manual).is_dir() and any(Path(manual).iterdir())):
            raise ValueError(f"{manual}: missing or empty; it should hold the {self.name} release ({self.HOMEPAGE})")
        # taken before anything is read, so that files changed meanwhile differ next time; fails early on a folder
        # that is not the corpus
        self._fingerprint = None if manual is None else self.source_fingerprint(manual)
        self.skip_reports, self.empty_splits = {}, []
        with count_conversions() as conversions:
            super().download_and_prepare(download_config=config, **kwargs)
        self.built = True
        conversions.log(logger, self.full_config_name)
        for split, report in self.skip_reports.items():
            if split in self.empty_splits:
                logger.warning("%s: split %s has no usable utterances; not built", self.full_config_name, split)
            report.log(logger, f"{self.full_config_name} {split}")

    def _download_and_prepare(self, dl_manager, download_config=None):
        fingerprint = self._fingerprint or self.source_fingerprint(dl_manager.manual_dir)
        super()._download_and_prepare(dl_manager, download_config)
        (Path(self.data_dir) / SOURCE_FILE).write_text(json.dumps(fingerprint))

    def _split_generators(self, dl_manager):
        return self._splits(self._sources(Path(dl_manager.manual_dir)))

    def _encode(self, utt: Utterance, report: SkipReport) -> dict | None:
        try:
            wave = load_segment(utt.audio_path, utt.offset, utt.duration, SAMPLE_RATE)
        except ValueError as e:
            return self._skip(report, "unreadable_audio", f"{utt.id}: {e}")
        ex = {k: getattr(utt, k) for k in TEXT_FEATURES}
        if self.builder_config.features == "audio":
            ex["audio"] = np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)
            ex["n_frames"] = len(wave)
        else:
            if len(wave) < MIN_FBANK_SAMPLES:
                return self._skip(report, "too_short", f"{utt.id}: {len(wave)} samples, fbank needs {MIN_FBANK_SAMPLES}")
            ex["fbank"] = np.asarray(fbank(wave, SAMPLE_RATE), dtype=np.float16)
            ex["n_frames"] = len(ex["fbank"])
        return ex

    def _skip(self, report: SkipReport, reason: str, message: str) -> None:
        if self.on_bad_utterance == "raise":
            raise ValueError(message)
        report.add(reason, message)
        return None

    def _splits(self, candidates: dict[str, list[_Source]]) -> dict:
        """Example generators for the candidate splits that hold utterances."""
        out = {}
        for split, sources in candidates.items():
            report = self.skip_reports.setdefault(split, SkipReport())
            items = [
                (source.prefix, utt)
                for source in sources
                for utt in source.read(report=report, on_bad_utterance=self.on_bad_utterance)
            ]
            if items:
                out[tfds_split_name(split)] = self._generate_examples(split, items)
            else:
                self.empty_splits.append(split)
        if not out:
            raise ValueError(f"{self.full_config_name}: no split has usable utterances")
        return out

    def _generate_examples(self, split: str, items: list[tuple[str, Utterance]]):
        report = self.skip_reports[split]
        for prefix, utt in items:
            ex = self._encode(utt, report)
            if ex is not None:
                yield prefix + utt.id, ex


def _pair_list(pairs: tuple[str, ...], found: list[str], manual_dir: Path) -> list[str]:
    if pairs:
        return list(pairs)
    if not found:
        raise ValueError(f"{manual_dir}: no language-pair folders found")
    return found


class MustC(_SpeechTranslation):
    """MuST-C (v1/v1.2/v2) English-to-X speech translation; configs per direction and ``multilingual``."""

    name = "mustc"
    HOMEPAGE = "https://ict.fbk.eu/must-c/"
    DESCRIPTION = "MuST-C: English TED talks segmented and translated; audio from whole-talk wavs."
    BUILDER_CONFIGS = _configs([f"en-{t}" for t in MUSTC_TARGETS], multilingual=True)
    SPLITS = MUSTC_SPLITS
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download MuST-C from https://ict.fbk.eu/must-c/ (registration required) and
    extract it so that the manual dir holds `en-de/data/{train,dev,tst-COMMON,tst-HE}/{wav,txt}`
    (one folder per direction). Splits become train, dev, tst_COMMON, tst_HE.
    """

    @classmethod
    def _found_pairs(cls, root: Path) -> set[str]:
        return {d.name for d in root.iterdir() if d.name.startswith("en-") and (d / "data").is_dir()}

    def _sources(self, root: Path) -> dict[str, list[_Source]]:
        pairs = _pair_list(self.builder_config.pairs, sorted(self._found_pairs(root)), root)
        prefix = "" if self.builder_config.pairs else "{}/"
        out = {}
        for split in self.SPLITS:
            present = [p for p in pairs if (root / p / "data" / split / "txt").is_dir()]
            if present:
                out[split] = [_Source(prefix.format(p), functools.partial(read_mustc, root, p, split),
                                      functools.partial(mustc_files, root, p, split)) for p in present]
        if not out:
            raise ValueError(f"{root}: no MuST-C splits found for {pairs} (expected <pair>/data/<split>/txt)")
        return out


class CoVoST2(_SpeechTranslation):
    """CoVoST 2 (Common Voice) speech translation, X->en and en->X; one config per direction."""

    name = "covost2"
    HOMEPAGE = "https://github.com/facebookresearch/covost"
    DESCRIPTION = ("CoVoST 2: Common Voice clips with translations (21 X->en and 15 en->X directions, and the "
                   "synthetic corpus's en<->X).")
    BUILDER_CONFIGS = _configs(list(dict.fromkeys([f"{s}_en" for s in COVOST_XX_EN + SYNTHETIC_LANGS]
                                                  + [f"en_{t}" for t in COVOST_EN_XX + SYNTHETIC_LANGS])))
    SPLITS = ("train", "dev", "test")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the Common Voice (v4) release of the source language and the CoVoST 2
    translation TSV `covost_v2.<src>_<tgt>.tsv` (https://github.com/facebookresearch/covost).
    The manual dir must hold `<src>/clips/*.mp3`, `<src>/validated.tsv` and the TSV (or the
    split TSVs `covost_v2.<src>_<tgt>.{train,dev,test}.tsv` from CoVoST's get_covost_splits.py,
    directly or in `<src>_<tgt>/`).
    """

    @classmethod
    def _found_pairs(cls, root: Path) -> set[str]:
        tsvs = [*root.glob("covost_v2.*.tsv"), *root.glob("*/covost_v2.*.tsv")]
        return {f"{m[1]}_{m[2]}" for p in tsvs if (m := _COVOST_TSV.fullmatch(p.name))}

    def _sources(self, root: Path) -> dict[str, list[_Source]]:
        src, tgt = self._pair().split("_")
        return {split: [_Source("", functools.partial(read_covost2, root, src, tgt, split),
                                functools.partial(covost2_files, root, src, tgt, split))] for split in self.SPLITS}


class EuroparlST(_SpeechTranslation):
    """Europarl-ST v1.1 speech translation between 9 European languages; one config per direction."""

    name = "europarl_st"
    HOMEPAGE = "https://www.mllp.upv.es/europarl-st/"
    DESCRIPTION = "Europarl-ST v1.1: European Parliament speeches segmented and translated."
    BUILDER_CONFIGS = _configs([f"{s}-{t}" for s in EUROPARL_LANGS for t in EUROPARL_LANGS if s != t])
    SPLITS = ("train", "dev", "test", "train-noisy")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download Europarl-ST v1.1 from https://www.mllp.upv.es/europarl-st/ and extract it so the
    manual dir holds `<src>/audios/*.m4a` and `<src>/<tgt>/{train,dev,test}/segments.*`.
    If no m4a decoder is installed (ffmpeg for audioread), convert the audio first, e.g.
    `for f in en/audios/*.m4a; do ffmpeg -i "$f" -ar 16000 -ac 1 "${f%.m4a}.wav"; done`;
    the .wav files beside the .m4a ones are used.
    """

    @classmethod
    def _found_pairs(cls, root: Path) -> set[str]:
        return {f"{p.parts[-4]}-{p.parts[-3]}" for p in root.glob("*/*/*/segments.lst") if p.parent.name in cls.SPLITS}

    def _sources(self, root: Path) -> dict[str, list[_Source]]:
        src, tgt = self._pair().split("-")
        splits = [s for s in self.SPLITS if (root / src / tgt / s / "segments.lst").is_file()]
        if not splits:
            raise ValueError(f"{root}: no Europarl-ST splits found under {src}/{tgt}/")
        return {split: [_Source("", functools.partial(read_europarl_st, root, src, tgt, split),
                                functools.partial(europarl_st_files, root, src, tgt, split))] for split in splits}


BUILDERS = {"mustc": MustC, "covost2": CoVoST2, "europarl_st": EuroparlST}
_ALIASES = {"must_c": "mustc", "must-c": "mustc", "covost": "covost2", "covost_2": "covost2", "europarl-st": "europarl_st"}


def source_digest(prepared_dir: str | os.PathLike) -> str:
    """A short digest of the source record of the prepared data in ``prepared_dir`` (``"none"`` without one)."""
    record = Path(prepared_dir) / SOURCE_FILE
    return hashlib.sha1(record.read_bytes()).hexdigest()[:12] if record.is_file() else "none"


def prepared_builder(
    dataset: str,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    config: str | STConfig | None = None,
    *,
    on_bad_utterance: str = "skip",
) -> _SpeechTranslation:
    """The builder of a dataset config with its ArrayRecords prepared from a manual download: built when missing,
    rebuilt with a warning when the source files changed since, else reused.

    Args:
      dataset: ``"mustc"``, ``"covost2"`` or ``"europarl_st"``.
      manual_dir: folder holding the extracted corpus in its original layout.
      data_dir: TFDS data dir to write ``<dataset>/<config>/<version>/`` into.
      config: config name (e.g. ``"en-de"``, ``"en-de.fbank"``, ``"multilingual"``,
        ``"fr_en"``), an :class:`STConfig`, or None for the builder's first config.
      on_bad_utterance: ``"skip"`` (count, log, continue) or ``"raise"``.

    ``builder.built`` says whether it was (re)built and ``builder.skip_reports`` holds the utterances the build
    skipped. Read the result with ``builder.as_data_source(split)`` (TFDS split names, e.g. ``"tst_COMMON"``).
    """
    key = _ALIASES.get(dataset.lower(), dataset.lower())
    if key not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(BUILDERS)}")
    with _no_gcs_metadata():
        builder = BUILDERS[key](config=config, data_dir=os.fspath(data_dir), on_bad_utterance=on_bad_utterance)
    with _local_shuffle_buckets():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return builder


def prepare(dataset: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
            config: str | STConfig | None = None, **kwargs) -> dict[str, int]:
    """Prepare a dataset config as :func:`prepared_builder` (same arguments) does; return ``{TFDS split: examples}``.

    Read the result with ``builder.as_data_source(split)``, e.g.
    ``MustC(config="en-de", data_dir=data_dir).as_data_source("tst_COMMON")``.
    """
    builder = prepared_builder(dataset, manual_dir, data_dir, config, **kwargs)
    return {name: info.num_examples for name, info in builder.info.splits.items()}
