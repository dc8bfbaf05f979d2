"""The miniature's data: multi-way parallel short sentences from the synthetic grammar, spoken by espeak-ng in each
language, a character vocabulary for CTC and a joint SentencePiece vocabulary with `<lang:xx>` tags for mBART.

Every sentence has a rendering in every language, so one utterance of language X serves as X ASR (its transcript),
X→Y ST (the rendering in Y) for every Y, and its transcript as X→Y MT source (joint training). Test sentences are
drawn first and excluded from the speech and text training sets. Only sentences of at most `max_words` English words
are kept (the grammar's predicative, possessive and location patterns, about 1-2 s of speech), and utterances longer
than `max_seconds` are dropped in every language.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from mlst_jax.data.synthetic.corpus import VOICE_VARIANTS
from mlst_jax.data.synthetic.grammar import LANGS, Sentence, sample_sentences
from mlst_jax.data.vocab import EOS_ID, PAD_ID, UNK_ID, Vocab, train_vocab

SAMPLE_RATE = 16000
MASK_ID = UNK_ID  # denoising mask token: <unk> never occurs in the text (character coverage 1.0)


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Sizes of the miniature corpus (sentences are multi-way: each is spoken in every language of `langs`)."""

    langs: tuple[str, ...] = ("en", "de", "fr")
    train_sentences: int = 300
    test_sentences: int = 40
    text_sentences: int = 3000  # text only (mBART pretraining), besides the train sentences
    max_words: int = 6
    max_seconds: float = 2.0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "langs", tuple(self.langs))
        unknown = [l for l in self.langs if l not in LANGS]
        if unknown or len(set(self.langs)) != len(self.langs) or len(self.langs) < 2:
            raise ValueError(f"corpus langs {list(self.langs)}: need >= 2 distinct languages of {LANGS}")
        if "en" not in self.langs:
            raise ValueError(f"corpus langs {list(self.langs)} must include 'en' (X→En / En→X directions)")
        for f in ("train_sentences", "test_sentences"):
            if getattr(self, f) < 1:
                raise ValueError(f"corpus {f}={getattr(self, f)} must be >= 1")

    def key(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclasses.dataclass
class Corpus:
    """Sentences per split and, per split and language, the spoken utterances as (sentence index, waveform)."""

    config: CorpusConfig
    sentences: dict[str, list[Sentence]]  # "train", "test", "text"
    speech: dict[tuple[str, str], list[tuple[int, np.ndarray]]]  # (split, lang) → utterances

    def texts(self, split: str, lang: str) -> list[str]:
        return [s.text[lang] for s in self.sentences[split]]

    def utterances(self, split: str, lang: str) -> list[tuple[int, np.ndarray]]:
        return self.speech[(split, lang)]

    def save(self, path: Path) -> None:
        arrays, index = {}, {}
        for (split, lang), utts in self.speech.items():
            for k, (i, w) in enumerate(utts):
                arrays[f"{split}/{lang}/{k}"] = w
            index[f"{split}/{lang}"] = [i for i, _ in utts]
        meta = {"config": dataclasses.asdict(self.config), "index": index,
                "sentences": {k: [dataclasses.asdict(s) for s in v] for k, v in self.sentences.items()}}
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "speech.npz", **arrays)
        (path / "corpus.json").write_text(json.dumps(meta, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Corpus":
        meta = json.loads((path / "corpus.json").read_text())
        arrays = np.load(path / "speech.npz")
        speech = {}
        for key, idx in meta["index"].items():
            split, lang = key.split("/")
            speech[(split, lang)] = [(i, arrays[f"{key}/{k}"]) for k, i in enumerate(idx)]
        sentences = {k: [Sentence(**s) for s in v] for k, v in meta["sentences"].items()}
        return cls(CorpusConfig(**meta["config"]), sentences, speech)


def _short(sentences: Sequence[Sentence], max_words: int) -> list[Sentence]:
    return [s for s in sentences if len(s.text["en"].split()) <= max_words]


def _draw(n: int, seed: int, max_words: int, exclude: set[str]) -> list[Sentence]:
    out: list[Sentence] = []
    attempt = 0
    while len(out) < n:
        # about a quarter of the grammar's sentences have <= 6 English words
        pool = sample_sentences(min(4 * (n - len(out)) + 200, 60_000), seed * 1000 + attempt, exclude)
        for s in _short(pool, max_words):
            if s.id not in exclude and len(out) < n:
                out.append(s)
                exclude.add(s.id)
        attempt += 1
        if attempt > 50:
            raise ValueError(f"could not draw {n} sentences of <= {max_words} words (corpus max_words)")
    return out


def _speak(text: str, lang: str, k: int) -> np.ndarray:
    from mlst_jax.data.synthetic.tts import synthesize_16k

    variant = VOICE_VARIANTS[k % len(VOICE_VARIANTS)]
    wav, _ = synthesize_16k(text, lang, variant, rate=150 + (7 * k) % 41, pitch=35 + (11 * k) % 31)
    return wav


def build_corpus(config: CorpusConfig, cache_dir: str | Path | None = None, progress: bool = False) -> Corpus:
    """Draws the sentences and synthesizes their speech (cached under `cache_dir/corpus-<key>` when given)."""
    cache = Path(cache_dir) / f"corpus-{config.key()}" if cache_dir else None
    if cache is not None and (cache / "corpus.json").is_file():
        return Corpus.load(cache)
    seen: set[str] = set()
    sentences = {"test": _draw(config.test_sentences, config.seed + 1, config.max_words, seen),
                 "train": _draw(config.train_sentences, config.seed + 2, config.max_words, seen)}
    sentences["text"] = _draw(config.text_sentences, config.seed + 3, config.max_words, seen) \
        if config.text_sentences else []
    jobs = [(split, lang) for split in ("train", "test") for lang in config.langs]
    total = sum(len(sentences[s]) for s, _ in jobs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="synthesizing speech", unit="utt")
    speech = {}
    max_len = int(config.max_seconds * SAMPLE_RATE)
    for split, lang in jobs:
        utts = []
        for i, s in enumerate(sentences[split]):
            w = _speak(s.text[lang], lang, i * len(config.langs) + config.langs.index(lang))
            if len(w) <= max_len:
                utts.append((i, w))
            if bar is not None:
                bar.update()
        speech[(split, lang)] = utts
    if bar is not None:
        bar.close()
    corpus = Corpus(config, sentences, speech)
    if cache is not None:
        corpus.save(cache)
    return corpus


# -- vocabularies -----------------------------------------------------------------------------------------------


class CharVocab:
    """CTC output vocabulary: id 0 is the blank, then the characters seen in the transcripts, then unknown."""

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}
        self.unk = len(self.chars) + 1

    def __len__(self) -> int:
        return len(self.chars) + 2

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "CharVocab":
        return cls(sorted(set("".join(texts))))

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, self.unk) for c in text]

    def decode_ctc(self, ids: Sequence[int]) -> str:
        """Greedy CTC: merge repeats, drop blanks."""
        out, prev = [], 0
        for i in map(int, ids):
            if i != prev and i != 0:
                out.append(self.chars[i - 1] if i <= len(self.chars) else "?")
            prev = i
        return "".join(out)


def text_vocab(corpus: Corpus, path_prefix: str | Path, size: int = 1000) -> Vocab:
    """Joint SentencePiece vocabulary (with `<lang:xx>` tags) over every training text of every language."""
    texts = [t for split in ("train", "text") for lang in corpus.config.langs for t in corpus.texts(split, lang)]
    return train_vocab(texts, path_prefix, size, langs=corpus.config.langs)


# -- batches ------------------------------------------------------------------------------------------------------


def waveform_batch(wavs: Sequence[np.ndarray], n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean unit-variance waveforms right-padded to [B, n_samples] and their lengths (the large/LV-60
    wav2vec 2.0 input normalization); rows past `len(wavs)` are padding with length 0."""
    x = np.zeros((len(wavs), n_samples), np.float32)
    lengths = np.zeros((len(wavs),), np.int32)
    for j, w in enumerate(wavs):
        w = w[:n_samples]
        x[j, :len(w)] = (w - w.mean()) / (w.std() + 1e-7)
        lengths[j] = len(w)
    return x, lengths


def pad_ids(rows: Sequence[Sequence[int]], length: int, pad: int = PAD_ID) -> np.ndarray:
    out = np.full((len(rows), length), pad, np.int32)
    for j, r in enumerate(rows):
        r = list(r)[:length]
        out[j, :len(r)] = r
    return out


def decoder_batch(rows: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mBART-50 decoder side for target ids `[<lang:y>, tokens..., </s>]`: inputs `[</s>, <lang:y>, tokens...]`,
    labels (the ids) and loss weights (0 on the language tag, which decoding forces, and on padding)."""
    labels = pad_ids(rows, length)
    inputs = np.concatenate([np.full((len(rows), 1), EOS_ID, np.int32), labels[:, :-1]], axis=1)
    inputs = np.where(inputs == PAD_ID, PAD_ID, inputs)
    weights = (labels != PAD_ID).astype(np.float32)
    weights[:, 0] = 0.0
    return inputs, labels, weights
