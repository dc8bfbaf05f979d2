"""Synthetic speech-translation corpora in the MuST-C, CoVoST 2 and Europarl-ST layouts.

Sentences come from :mod:`~mlst_jax.data.synthetic.grammar` (one rendering per language, so every corpus is
multi-way parallel) and are spoken by espeak-ng (:mod:`~mlst_jax.data.synthetic.tts`) at 16 kHz mono:

* **MuST-C** (``<out>/mustc``): English speech, the same talks in the 8 directions ``en-{de,es,fr,it,nl,pt,ro,ru}``
  (each talk wav is stored once and hard-linked); splits ``train``, ``dev``, ``tst-COMMON``; one voice per talk.
  The dev and test sets are therefore multi-way aligned (:mod:`mlst_jax.data.multiway_pipeline`).
* **CoVoST 2** (``<out>/covost2``): X->en for the 8 non-English languages (speech in X) and en->X (one set of
  English clips translated into all 8); Common Voice clips (16-bit wav), ``<src>/validated.tsv`` and the release
  TSVs ``covost_v2.<src>_<tgt>.tsv``; splits ``train``, ``dev``, ``test``; one voice per Common Voice client.
* **Europarl-ST** (``<out>/europarl_st``): all 72 directions among the 9 languages; per source language one set of
  speeches (wav) translated into the 8 others; splits ``train``, ``dev``, ``test``; one voice per speech.

Sizes (utterances per direction and split, :data:`SIZES`): ``tiny`` 48/16/16 in every layout; ``demo``
10,000/300/500 for MuST-C and 1,000/100/100 per source language for CoVoST 2 and Europarl-ST; ``large``
100,000/1,500/2,500 for MuST-C and 20,000/1,000/1,000 for the others. Corpora with fewer than 1,000 training
utterances per direction use shorter talks, speeches and client runs so that they still have many voices.

Voices: each speaker is an espeak-ng voice variant (:data:`VOICE_VARIANTS`: 7 male, 7 female, 2 Klatt; cycled
through a seeded permutation per language, so any 16 consecutive speakers differ) with a rate in 140-200 words per
minute and a pitch in 35-65. Variants with breath noise (``f2``, ``f3``, ``f5``, ``whisper``, ...) are left out:
espeak-ng seeds the generator of that noise from the clock, so their audio is not reproducible.
Speaker ids spell the voice: ``<lang>_<variant>_r<rate>_p<pitch>``. With ``noise_snr_db`` every utterance gets
white or pink Gaussian noise at exactly that signal-to-noise ratio (signal power measured over the utterance);
silence between segments stays silent.

Held-out sentences: the dev and test sentences of every layout and source language are drawn first and excluded
from every training set, so no training sentence of any layout occurs in any dev or test set; dev and test are
disjoint within each layout and source language. All choices (sentences, voices, talk lengths, noise) derive from
``seed`` alone and synthesis is a pure function of its arguments, so a given (size, seed, lexicon, noise) gives
byte-identical files whatever the worker count or the set of layouts written.

Lexicon: sentences draw on the whole lexicon by default; ``lexicon="demo"`` restricts them to a small subset
(:func:`~mlst_jax.data.synthetic.grammar.lexicon_subset`), the corpus of ``make demo``.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from tqdm.auto import tqdm

from mlst_jax.audio.io import SAMPLE_RATE
from mlst_jax.data.synthetic.grammar import LANGS, Sentence, lexicon_subset, sample_sentences
from mlst_jax.data.synthetic.tts import synthesize_16k
from mlst_jax.data.writers import Talk, write_covost2, write_europarl_st, write_mustc

__all__ = [
    "LAYOUTS", "LAYOUT_SPLITS", "SIZES", "VOICE_VARIANTS", "RATE_RANGE", "PITCH_RANGE", "Size", "Voice",
    "layout_directions", "synthesize_corpus",
]

LAYOUTS = ("mustc", "covost2", "europarl_st")
LAYOUT_SPLITS = {
    "mustc": ("train", "dev", "tst-COMMON"),
    "covost2": ("train", "dev", "test"),
    "europarl_st": ("train", "dev", "test"),
}
VOICE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f4", "Andrea", "Annie", "anika", "belinda", "steph", "klatt3",
    "klatt4",
)
RATE_RANGE = (140, 200)
PITCH_RANGE = (35, 65)
_GROUPING = {"mustc": (8, 20), "covost2": (1, 6), "europarl_st": (3, 10)}
_SMALL_GROUPING = {"mustc": (4, 8), "covost2": (1, 3), "europarl_st": (2, 5)}
_SMALL = 1000
_GAP = 0.25


class Size(NamedTuple):
    """Utterances per direction in the train, dev and test splits."""

    train: int
    dev: int
    test: int


SIZES: dict[str, dict[str, Size]] = {
    "tiny": {layout: Size(48, 16, 16) for layout in LAYOUTS},
    "demo": {"mustc": Size(10_000, 300, 500), "covost2": Size(1_000, 100, 100), "europarl_st": Size(1_000, 100, 100)},
    "large": {
        "mustc": Size(100_000, 1_500, 2_500), "covost2": Size(20_000, 1_000, 1_000),
        "europarl_st": Size(20_000, 1_000, 1_000),
    },
}


class Voice(NamedTuple):
    """One synthetic speaker: language, espeak-ng voice variant, rate (words per minute) and pitch (0-100)."""

    lang: str
    variant: str
    rate: int
    pitch: int

    @property
    def id(self) -> str:
        """Speaker id ``<lang>_<variant>_r<rate>_p<pitch>``."""
        return f"{self.lang}_{self.variant}_r{self.rate}_p{self.pitch}"


class _Unit(NamedTuple):
    """A talk, a Common Voice client's run of clips or a speech: id, voice and (sentence, job index) items."""

    id: str
    voice: Voice
    items: list[tuple[Sentence, int]]


class _Group(NamedTuple):
    layout: str
    src: str
    tgts: tuple[str, ...]
    splits: dict[str, list[_Unit]]


def layout_directions(layout: str, langs: Sequence[str] = LANGS) -> list[tuple[str, tuple[str, ...]]]:
    """``(source language, target languages)`` per source language of a layout over `langs`, in writing order."""
    langs = [lang for lang in LANGS if lang in langs]
    others = [lang for lang in langs if lang != "en"]
    if layout == "mustc":
        return [("en", tuple(others))]
    if layout == "covost2":
        return [("en", tuple(others))] + [(lang, ("en",)) for lang in others]
    if layout == "europarl_st":
        return [(s, tuple(t for t in langs if t != s)) for s in langs]
    raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


def _partition(n: int, lo: int, hi: int, rng: random.Random) -> list[int]:
    sizes = []
    while n > 0:
        k = min(rng.randint(lo, hi), n)
        if 0 < n - k < lo:
            k = n if n <= hi else n - lo
        sizes.append(k)
        n -= k
    return sizes


def _resolve_sizes(size) -> tuple[str, dict[str, Size]]:
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown corpus size {size!r}; choose from {', '.join(SIZES)} or pass a Size")
        return size, SIZES[size]
    try:
        s = Size(*(int(v) for v in size))
    except (TypeError, ValueError):
        raise ValueError(f"size must be one of {', '.join(SIZES)} or (train, dev, test) counts, got {size!r}") from None
    if min(s) < 0 or s.train + s.dev + s.test == 0:
        raise ValueError(f"size counts must be >= 0 and not all 0, got {tuple(s)}")
    return "custom", {layout: s for layout in LAYOUTS}


def _plan(sizes: dict[str, Size], seed: int, layouts: Sequence[str], lexicon: str, langs: Sequence[str] = LANGS,
          max_words: int | None = None) -> list[_Group]:
    """Sentences, units and voices of every (layout, source language) over `langs`, with job indices in writing
    order. Held-out sentences are drawn for every layout and language, so that a corpus of fewer layouts or
    languages has the same sentences as the full one."""
    held: set[str] = set()
    heldout: dict[tuple[str, str], tuple[list[Sentence], list[Sentence]]] = {}
    for layout in LAYOUTS:
        n = sizes[layout]
        for src, _ in layout_directions(layout):
            test = sample_sentences(n.test, _seed(seed, layout, src, "test"), lexicon=lexicon, max_words=max_words)
            dev = sample_sentences(n.dev, _seed(seed, layout, src, "dev"), exclude={s.id for s in test},
                                   lexicon=lexicon, max_words=max_words)
            heldout[layout, src] = (dev, test)
            held.update(s.id for s in dev + test)
    groups, job = [], 0
    for layout in layouts:
        n = sizes[layout]
        lo, hi = (_SMALL_GROUPING if n.train < _SMALL else _GROUPING)[layout]
        for src, tgts in layout_directions(layout, langs):
            train = sample_sentences(n.train, _seed(seed, layout, src, "train"), exclude=held, lexicon=lexicon,
                                     max_words=max_words)
            voice_rng = random.Random(_seed(seed, layout, src, "voices"))
            order = list(VOICE_VARIANTS)
            voice_rng.shuffle(order)
            splits, k = {}, 0
            for split, sents in zip(LAYOUT_SPLITS[layout], (train, *heldout[layout, src])):
                if not sents:
                    continue
                rng = random.Random(_seed(seed, layout, src, split, "units"))
                units, pos = [], 0
                for count in _partition(len(sents), lo, hi, rng):
                    voice = Voice(src, order[k % len(order)], voice_rng.randint(*RATE_RANGE),
                                  voice_rng.randint(*PITCH_RANGE))
                    items = [(s, job + i) for i, s in enumerate(sents[pos:pos + count])]
                    units.append(_Unit(_unit_id(layout, src, k), voice, items))
                    job, pos, k = job + count, pos + count, k + 1
                splits[split] = units
            groups.append(_Group(layout, src, tgts, splits))
    return groups


def _unit_id(layout: str, src: str, k: int) -> str:
    if layout == "mustc":
        return f"talk_{k:05d}"
    if layout == "covost2":
        return f"client_{src}_{k:05d}"
    return f"{src}_speech_{k:05d}"


def _noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if color == "white":
        return white
    spectrum = np.fft.rfft(white)
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = f[1] if len(f) > 1 else 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def _add_noise(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``audio`` plus white or pink noise (chosen by ``seed``) scaled to ``snr_db`` dB below the audio's power."""
    rng = np.random.default_rng(seed)
    noise = _noise(len(audio), "pink" if rng.random() < 0.5 else "white", rng)
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    if power == 0.0:
        return audio
    noise *= np.sqrt(power / (np.mean(noise**2) * 10.0 ** (snr_db / 10.0)))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def _render(job: tuple) -> np.ndarray:
    """Synthesize one utterance: ``(text, lang, variant, rate, pitch, snr_db or None, noise seed)``."""
    text, lang, variant, rate, pitch, snr_db, noise_seed = job
    audio, _ = synthesize_16k(text, lang, variant, rate, pitch)
    if snr_db is not None:
        audio = _add_noise(audio, snr_db, noise_seed)
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


class _Results:
    """Synthesized audio by job index, computed in order by a process pool and handed out once each."""

    def __init__(self, jobs: list[tuple], workers: int, progress: bool):
        self.lengths = np.zeros(len(jobs), np.int64)
        self._pool = None
        if workers > 1 and len(jobs) > 1:
            self._pool = multiprocessing.get_context("spawn").Pool(workers)
            self._it = self._pool.imap(_render, jobs, chunksize=8)
        else:
            self._it = map(_render, jobs)
        self._bar = tqdm(total=len(jobs), disable=not progress, unit="utt", desc="synthesizing", smoothing=0.05)
        self._next = 0
        self._cache: dict[int, np.ndarray] = {}

    def get(self, index: int) -> np.ndarray:
        if index < self._next and index not in self._cache:
            raise RuntimeError(f"audio of job {index} was already used")
        while index not in self._cache:
            pcm = next(self._it)
            self.lengths[self._next] = len(pcm)
            self._cache[self._next] = pcm
            self._next += 1
            self._bar.update()
        return self._cache.pop(index)

    def close(self, ok: bool) -> None:
        self._bar.close()
        if self._pool is not None:
            if ok:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()


class _Wave:
    """A waveform that is synthesized when a writer first converts it to an array."""

    __slots__ = ("results", "index")

    def __init__(self, results: _Results, index: int):
        self.results, self.index = results, index

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.results.get(self.index).astype(np.float32) / 32768.0, dtype=dtype)


def _write_group(out: Path, group: _Group, results: _Results) -> None:
    root = out / group.layout
    src, tgts = group.src, group.tgts

    def segments(unit: _Unit) -> list[tuple]:
        return [(_Wave(results, j), s.text[src], {t: s.text[t] for t in tgts}) for s, j in unit.items]

    if group.layout == "mustc":
        for split, units in group.splits.items():
            talks = [Talk(u.id, u.voice.id, segments(u)) for u in units]
            write_mustc(root, [f"{src}-{t}" for t in tgts], split, talks, gap=_GAP)
    elif group.layout == "covost2":
        segs = [(split, u.voice.id, seg) for split, units in group.splits.items() for u in units for seg in segments(u)]
        rows = [(f"common_voice_{src}_{i:07d}", *seg, client, split) for i, (split, client, seg) in enumerate(segs)]
        write_covost2(root, src, tgts, rows, audio_format="wav")
    else:
        for split, units in group.splits.items():
            write_europarl_st(root, src, tgts, split, [(u.id, segments(u), u.voice.id) for u in units], gap=_GAP)


def _direction_name(layout: str, src: str, tgt: str) -> str:
    return f"{src}_{tgt}" if layout == "covost2" else f"{src}-{tgt}"


def _manifest(name: str, sizes: dict[str, Size], seed: int, lexicon: str, noise_snr_db, groups: list[_Group],
              lengths: np.ndarray) -> dict:
    layouts: dict[str, dict] = {}
    voices: dict[str, set[str]] = {}
    for g in groups:
        entry = layouts.setdefault(g.layout, {
            "root": g.layout, "splits": list(LAYOUT_SPLITS[g.layout]), "directions": {}, "utterances": 0,
            "seconds": 0.0, "speakers": {}, "voice_variants": {},
        })
        counts = {split: sum(len(u.items) for u in units) for split, units in g.splits.items()}
        for t in g.tgts:
            entry["directions"][_direction_name(g.layout, g.src, t)] = counts
        units = [u for us in g.splits.values() for u in us]
        jobs = [j for u in units for _, j in u.items]
        entry["utterances"] += len(jobs)
        entry["seconds"] += float(lengths[jobs].sum()) / SAMPLE_RATE
        entry["speakers"][g.src] = len({u.voice.id for u in units})
        entry["voice_variants"][g.src] = sorted({u.voice.variant for u in units})
        voices.setdefault(g.src, set()).update(u.voice.variant for u in units)
    for entry in layouts.values():
        entry["seconds"] = round(entry["seconds"], 3)
        entry["hours"] = round(entry["seconds"] / 3600, 4)
    return {
        "size": name,
        "sizes": {layout: sizes[layout]._asdict() for layout in layouts},
        "seed": seed,
        "lexicon": lexicon,
        "noise_snr_db": noise_snr_db,
        "sample_rate": SAMPLE_RATE,
        "layouts": layouts,
        "voices": {lang: sorted(v) for lang, v in sorted(voices.items(), key=lambda kv: LANGS.index(kv[0]))},
        "utterances": sum(e["utterances"] for e in layouts.values()),
        "seconds": round(sum(e["seconds"] for e in layouts.values()), 3),
    }


def synthesize_corpus(
    out_dir: str | os.PathLike,
    size: str | Sequence[int] = "tiny",
    seed: int = 0,
    layouts: Sequence[str] = ("mustc",),
    noise_snr_db: float | None = None,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    lexicon: str = "full",
    langs: Sequence[str] = LANGS,
    max_words: int | None = None,
) -> dict:
    """Generate a synthetic speech-translation corpus in the MuST-C, CoVoST 2 and/or Europarl-ST layouts.

    Args:
      out_dir: output root; each layout goes to ``<out_dir>/<layout>`` and the manifest to
        ``<out_dir>/manifest.json``.
      size: ``"tiny"``, ``"demo"`` or ``"large"`` (see :data:`SIZES`), or ``(train, dev, test)`` utterances
        per direction for every layout.
      seed: seed of every random choice (sentences, voices, talk lengths, noise).
      layouts: any of ``"mustc"``, ``"covost2"``, ``"europarl_st"``.
      noise_snr_db: add white or pink noise at this SNR (dB) to every utterance; None for clean speech.
      workers: synthesis processes (default: the usable CPU count); 1 synthesizes in this process.
        The output does not depend on it.
      progress: show a tqdm progress bar.
      overwrite: replace existing ``<out_dir>/<layout>`` folders instead of refusing to write into them.
      lexicon: the lexicon subset the sentences draw on: ``"full"``, or ``"demo"`` (26 nouns, 10 adjectives,
        16 verbs, numbers up to 12: a task that the demo's small model learns in a few minutes on a CPU); see
        :func:`mlst_jax.data.synthetic.grammar.lexicon_subset`.
      langs: the languages written (English and at least one other): MuST-C and CoVoST 2 pair English with the
        others, Europarl-ST pairs every two of them; a corpus of fewer languages has the same sentences as the
        full one.
      max_words: only sentences of at most this many English words (short utterances for toy models).

    Returns:
      The manifest written to ``manifest.json``: ``size``, ``sizes``, ``seed``, ``lexicon``, ``noise_snr_db``,
      ``sample_rate``; per layout ``directions`` (``{direction: {split: utterances}}``), ``utterances`` and
      ``seconds``/``hours`` of distinct speech (each recording counted once), ``speakers`` and ``voice_variants``
      per source language; ``voices`` (variants used per language), total ``utterances`` and ``seconds``. The
      returned dict also has ``wall_time_s`` and ``workers`` (left out of the file so that it is reproducible).

    Raises:
      ValueError: for an unknown size, layout or lexicon subset, a bad SNR, or an existing non-empty layout folder
        without ``overwrite``.
    """
    start = time.perf_counter()
    name, sizes = _resolve_sizes(size)
    layouts = [layouts] if isinstance(layouts, str) else list(layouts)
    unknown = [layout for layout in layouts if layout not in LAYOUTS]
    if unknown or not layouts:
        raise ValueError(f"unknown layout(s) {unknown or layouts}; choose from {', '.join(LAYOUTS)}")
    layouts = [layout for layout in LAYOUTS if layout in layouts]
    if noise_snr_db is not None and not np.isfinite(noise_snr_db):
        raise ValueError(f"noise_snr_db must be a finite number of dB, got {noise_snr_db!r}")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    lexicon_subset(lexicon)  # an unknown name fails before anything is written
    langs = tuple(langs)
    unknown = [lang for lang in langs if lang not in LANGS]
    if unknown or "en" not in langs or len(set(langs)) < 2:
        raise ValueError(f"langs {list(langs)}: need English and at least one other of {', '.join(LANGS)}")
    if max_words is not None and max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    out = Path(out_dir)
    for layout in layouts:
        path = out / layout
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if not overwrite:
                raise ValueError(f"{path} already exists and is not empty; pass overwrite=True "
                                 "(mlst data synth --overwrite) to replace it")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)

    groups = _plan(sizes, seed, layouts, lexicon, langs, max_words)
    jobs = [None] * sum(len(u.items) for g in groups for us in g.splits.values() for u in us)
    for g in groups:
        for split, units in g.splits.items():
            for u in units:
                for i, (s, j) in enumerate(u.items):
                    snr = None if noise_snr_db is None else float(noise_snr_db)
                    jobs[j] = (s.text[g.src], g.src, u.voice.variant, u.voice.rate, u.voice.pitch, snr,
                               _seed(seed, g.layout, g.src, split, u.id, i, "noise"))
    results = _Results(jobs, workers, progress)
    ok = False
    try:
        for g in groups:
            _write_group(out, g, results)
        ok = True
    finally:
        results.close(ok)
    manifest = _manifest(name, sizes, seed, lexicon, noise_snr_db, groups, results.lengths)
    if tuple(langs) != LANGS or max_words is not None:  # recorded when they differ from the full corpus
        manifest.update(langs=[lang for lang in LANGS if lang in langs], max_words=max_words)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {**manifest, "workers": workers, "wall_time_s": round(time.perf_counter() - start, 3)}
