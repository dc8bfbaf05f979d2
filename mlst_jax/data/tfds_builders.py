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
utterances are logged per split and kept in ``builder.skip_reports``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import types
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from mlst_jax.data.layouts import (
    MUSTC_SPLITS,
    SkipReport,
    Utterance,
    load_segment,
    read_covost2,
    read_europarl_st,
    read_mustc,
)

__all__ = ["STConfig", "MustC", "CoVoST2", "EuroparlST", "prepare", "tfds_split_name", "BUILDERS"]

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


class _SpeechTranslation(tfds.core.GeneratorBasedBuilder):
    """Shared generation: read utterances, load their audio, encode audio or fbank."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "Audio and fbank arrays stored as raw bytes."}
    HOMEPAGE = ""
    DESCRIPTION = ""

    def __init__(self, *, on_bad_utterance: str = "skip", file_format: str = "array_record", **kwargs):
        self.on_bad_utterance = on_bad_utterance
        self.skip_reports: dict[str, SkipReport] = {}
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=_features(self.builder_config.features),
            homepage=self.HOMEPAGE,
        )

    def _pair(self) -> str:
        if len(self.builder_config.pairs) != 1:
            raise ValueError(f"{self.name} config {self.builder_config.name!r} needs exactly one pair")
        return self.builder_config.pairs[0]

    def _encode(self, utt: Utterance, report: SkipReport) -> dict | None:
        try:
            wave = load_segment(utt.audio_path, utt.offset, utt.duration, 16000)
        except ValueError as e:
            return self._skip(report, "unreadable_audio", f"{utt.id}: {e}")
        ex = {k: getattr(utt, k) for k in TEXT_FEATURES}
        if self.builder_config.features == "audio":
            ex["audio"] = np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)
            ex["n_frames"] = len(wave)
        else:
            if len(wave) < MIN_FBANK_SAMPLES:
                return self._skip(report, "too_short", f"{utt.id}: {len(wave)} samples, fbank needs {MIN_FBANK_SAMPLES}")
            from mlst_jax.audio import fbank

            ex["fbank"] = np.asarray(fbank(wave, 16000), dtype=np.float16)
            ex["n_frames"] = len(ex["fbank"])
        return ex

    def _skip(self, report: SkipReport, reason: str, message: str) -> None:
        if self.on_bad_utterance == "raise":
            raise ValueError(message)
        report.add(reason, message)
        return None

    def _splits(self, candidates: dict[str, list[tuple[str, Callable[..., Iterator[Utterance]]]]]) -> dict:
        """Example generators for the candidate splits (``{split: [(key_prefix, reader)]}``) that hold utterances."""
        out = {}
        for split, sources in candidates.items():
            report = self.skip_reports.setdefault(split, SkipReport())
            items = [
                (prefix, utt)
                for prefix, read in sources
                for utt in read(report=report, on_bad_utterance=self.on_bad_utterance)
            ]
            if items:
                out[tfds_split_name(split)] = self._generate_examples(split, items)
            else:
                logger.warning(
                    "%s/%s: split %s has no usable utterances; not built", self.name, self.builder_config.name, split
                )
                report.log(logger, f"{self.name}/{self.builder_config.name} {split}")
        if not out:
            raise ValueError(f"{self.name}/{self.builder_config.name}: no split has usable utterances")
        return out

    def _generate_examples(self, split: str, items: list[tuple[str, Utterance]]):
        report = self.skip_reports[split]
        for prefix, utt in items:
            ex = self._encode(utt, report)
            if ex is not None:
                yield prefix + utt.id, ex
        report.log(logger, f"{self.name}/{self.builder_config.name} {split}")


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
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download MuST-C from https://ict.fbk.eu/must-c/ (registration required) and
    extract it so that the manual dir holds `en-de/data/{train,dev,tst-COMMON,tst-HE}/{wav,txt}`
    (one folder per direction). Splits become train, dev, tst_COMMON, tst_HE.
    """

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        found = sorted(d.name for d in root.iterdir() if d.name.startswith("en-") and (d / "data").is_dir())
        pairs = _pair_list(self.builder_config.pairs, found, root)
        prefix = "" if self.builder_config.pairs else "{}/"
        candidates = {}
        for split in MUSTC_SPLITS:
            present = [p for p in pairs if (root / p / "data" / split / "txt").is_dir()]
            if present:
                candidates[split] = [
                    (prefix.format(p), lambda p=p, split=split, **kw: read_mustc(root, p, split, **kw)) for p in present
                ]
        if not candidates:
            raise ValueError(f"{root}: no MuST-C splits found for {pairs} (expected <pair>/data/<split>/txt)")
        return self._splits(candidates)


class CoVoST2(_SpeechTranslation):
    """CoVoST 2 (Common Voice) speech translation, X->en and en->X; one config per direction."""

    name = "covost2"
    HOMEPAGE = "https://github.com/facebookresearch/covost"
    DESCRIPTION = ("CoVoST 2: Common Voice clips with translations (21 X->en and 15 en->X directions, and the "
                   "synthetic corpus's en<->X).")
    BUILDER_CONFIGS = _configs(list(dict.fromkeys([f"{s}_en" for s in COVOST_XX_EN + SYNTHETIC_LANGS]
                                                  + [f"en_{t}" for t in COVOST_EN_XX + SYNTHETIC_LANGS])))
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the Common Voice (v4) release of the source language and the CoVoST 2
    translation TSV `covost_v2.<src>_<tgt>.tsv` (https://github.com/facebookresearch/covost).
    The manual dir must hold `<src>/clips/*.mp3`, `<src>/validated.tsv` and the TSV (or the
    split TSVs `covost_v2.<src>_<tgt>.{train,dev,test}.tsv` from CoVoST's get_covost_splits.py,
    directly or in `<src>_<tgt>/`).
    """

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        src, tgt = self._pair().split("_")
        return self._splits({
            split: [("", lambda split=split, **kw: read_covost2(root, src, tgt, split, **kw))]
            for split in ("train", "dev", "test")
        })


class EuroparlST(_SpeechTranslation):
    """Europarl-ST v1.1 speech translation between 9 European languages; one config per direction."""

    name = "europarl_st"
    HOMEPAGE = "https://www.mllp.upv.es/europarl-st/"
    DESCRIPTION = "Europarl-ST v1.1: European Parliament speeches segmented and translated."
    BUILDER_CONFIGS = _configs([f"{s}-{t}" for s in EUROPARL_LANGS for t in EUROPARL_LANGS if s != t])
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download Europarl-ST v1.1 from https://www.mllp.upv.es/europarl-st/ and extract it so the
    manual dir holds `<src>/audios/*.m4a` and `<src>/<tgt>/{train,dev,test}/segments.*`.
    If no m4a decoder is installed (ffmpeg for audioread), convert the audio first, e.g.
    `for f in en/audios/*.m4a; do ffmpeg -i "$f" -ar 16000 -ac 1 "${f%.m4a}.wav"; done`;
    the .wav files beside the .m4a ones are used.
    """

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        src, tgt = self._pair().split("-")
        splits = [s for s in ("train", "dev", "test", "train-noisy") if (root / src / tgt / s / "segments.lst").is_file()]
        if not splits:
            raise ValueError(f"{root}: no Europarl-ST splits found under {src}/{tgt}/")
        return self._splits({
            split: [("", lambda split=split, **kw: read_europarl_st(root, src, tgt, split, **kw))] for split in splits
        })


BUILDERS = {"mustc": MustC, "covost2": CoVoST2, "europarl_st": EuroparlST}
_ALIASES = {"must_c": "mustc", "must-c": "mustc", "covost": "covost2", "covost_2": "covost2", "europarl-st": "europarl_st"}


def prepare(
    dataset: str,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    config: str | STConfig | None = None,
    *,
    on_bad_utterance: str = "skip",
) -> dict[str, int]:
    """Build a dataset's ArrayRecord files from a manual download and return ``{split: examples}``.

    Args:
      dataset: ``"mustc"``, ``"covost2"`` or ``"europarl_st"``.
      manual_dir: folder holding the extracted corpus in its original layout.
      data_dir: TFDS data dir to write ``<dataset>/<config>/<version>/`` into.
      config: config name (e.g. ``"en-de"``, ``"en-de.fbank"``, ``"multilingual"``,
        ``"fr_en"``), an :class:`STConfig`, or None for the builder's first config.
      on_bad_utterance: ``"skip"`` (count, log, continue) or ``"raise"``.

    Read the result with ``builder.as_data_source(split)``, e.g.
    ``MustC(config="en-de", data_dir=data_dir).as_data_source("tst_COMMON")``.
    """
    key = _ALIASES.get(dataset.lower(), dataset.lower())
    if key not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(BUILDERS)}")
    with _no_gcs_metadata():
        builder = BUILDERS[key](config=config, data_dir=os.fspath(data_dir), on_bad_utterance=on_bad_utterance)
    with _local_shuffle_buckets():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return {name: info.num_examples for name, info in builder.info.splits.items()}
