"""Real-corpus data of `mlst xmef-train` (`mlst_jax.xmef.train`, whose module docstring describes the data
rules): the training and evaluation directions of the config's languages, the per-dataset layout readers (CoVoST 2,
Europarl-ST, MuST-C through `mlst_jax.data.layouts`), target tokenization into examples with the length filters,
16 kHz audio loading and per-utterance normalization, padded ST batches and the background-loading training sampler.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import ml_collections
import numpy as np

from mlst_jax.xmef import config as xconfig
from mlst_jax.xmef import directions as dirs

if TYPE_CHECKING:
    from mlst_jax.xmef.train import Settings

SAMPLE_RATE = 16000
DATASETS = ("covost2", "europarl_st", "mustc")
PAD_ID, EOS_ID, UNK_ID = 1, 2, 3  # mBART-50 (fairseq layout)
MIN_TOKEN_BUCKET = 16
COVOST_CODES = {"zh": "zh-CN", "sv": "sv-SE"}  # Common Voice / CoVoST 2 file codes of these languages


# -- languages and directions -----------------------------------------------------------------------------------


def _langs(value) -> list[str]:
    """Languages of a tuple field; "de,fr" items (what `--config.data.src_langs=de,fr` gives) are split."""
    if isinstance(value, str):
        value = (value,)
    out: list[str] = []
    for item in value or ():
        for lang in str(item).split(","):
            if lang.strip() and lang.strip() not in out:
                out.append(lang.strip())
    return out


def config_directions(spec: str, c: ml_collections.ConfigDict, field: str = "data.directions") -> list[tuple[str, str]]:
    """Directions of `spec` over the config's languages: `x-en` = `data.src_langs` → `data.src_lang`, `en-x` =
    `data.src_lang` → `data.tgt_langs`, `english-centric` both, `m2m` every source (English and `src_langs`) to
    every target (English and `tgt_langs`), `src-tgt` pairs of any of these languages; comma-separated."""
    pivot = c.data.src_lang
    src_side = [pivot] + [l for l in _langs(c.data.get("src_langs", ())) if l != pivot]
    tgt_side = [pivot] + [l for l in _langs(c.data.get("tgt_langs", ())) if l != pivot]
    union = list(dict.fromkeys(src_side + tgt_side))
    out: list[tuple[str, str]] = []
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not items:
        raise ValueError(f"{field} is empty; use x-en, en-x, english-centric, m2m or src-tgt pairs")
    for item in items:
        try:
            if item == "x-en":
                new = dirs.parse_directions("x-en", src_side, pivot)
            elif item == "en-x":
                new = dirs.parse_directions("en-x", tgt_side, pivot)
            elif item == "english-centric":
                new = dirs.parse_directions("x-en", src_side, pivot) + dirs.parse_directions("en-x", tgt_side, pivot)
            elif item == "m2m":
                new = [(s, t) for s, t in dirs.parse_directions("m2m", union, pivot)
                       if s in src_side and t in tgt_side]
            else:
                new = dirs.parse_directions(item, union, pivot)
        except ValueError as e:
            raise ValueError(f"{field}={spec!r}: {e} (languages: data.src_lang, data.src_langs, data.tgt_langs)") \
                from None
        out.extend(d for d in new if d not in out)
    if not out:
        raise ValueError(f"{field}={spec!r} selects no direction (data.src_langs / data.tgt_langs are empty?)")
    return out


def lang_code_map(c: ml_collections.ConfigDict) -> dict[str, str]:
    """`data.lang_codes` ("ca=es_XX,cy=fr_XX") as {language: mBART-50 code}."""
    from mlst_jax.models.mbart import mbart50_code

    spec = xconfig.train_setting(c, "lang_codes")
    out = {}
    for item in [s.strip() for s in str(spec).split(",") if s.strip()]:
        lang, sep, code = item.partition("=")
        if not sep or not lang.strip() or not code.strip():
            raise ValueError(f"data.lang_codes={spec!r}: expected 'lang=mBART-50 code' items, e.g. ca=es_XX")
        try:
            out[lang.strip()] = mbart50_code(code.strip())
        except ValueError as e:
            raise ValueError(f"data.lang_codes={spec!r}: {e}") from None
    return out


def target_code(lang: str, codes: dict[str, str]) -> str:
    """The mBART-50 code forced first for target language `lang`."""
    from mlst_jax.models.mbart import mbart50_code

    if lang in codes:
        return codes[lang]
    try:
        return mbart50_code(lang)
    except ValueError:
        raise ValueError(f"target language {lang!r} has no mBART-50 language code (seed 001: CoVoST 2's Ca and Cy "
                         f"were never seen in mBART pretraining); drop it from the directions or map it to a code "
                         f"this run does not otherwise use, e.g. --config.data.lang_codes={lang}=es_XX") from None


# -- reading and examples ---------------------------------------------------------------------------------------


def encode_target(vocab, text: str, lang_id: int) -> list[int]:
    """`[lang code, pieces..., </s>]` in mBART-50's ids (HF `MBart50Tokenizer(text_target=text).input_ids` with
    `tgt_lang` set): SentencePiece id i > 0 → i + 1, unknown (0) → `<unk>` 3."""
    return [lang_id, *[i + 1 if i > 0 else UNK_ID for i in vocab.sp.encode(text, out_type=int)], EOS_ID]


@dataclasses.dataclass(frozen=True)
class Example:
    utt: Any  # mlst_jax.data.layouts.Utterance
    ids: tuple[int, ...]  # [lang code, pieces..., </s>]
    direction: str  # "src-tgt"


def _read(dataset: str, root: Path, src: str, tgt: str, split: str, report) -> list:
    from mlst_jax.data import layouts

    if dataset == "covost2":
        pairs = list(dict.fromkeys([(src, tgt), (COVOST_CODES.get(src, src), COVOST_CODES.get(tgt, tgt))]))
        first = None
        for s, t in pairs:
            try:
                return list(layouts.read_covost2(root, s, t, split, report=report))
            except FileNotFoundError as e:
                first = first or e
        raise first
    if dataset == "europarl_st":
        return list(layouts.read_europarl_st(root, src, tgt, split, report=report))
    return list(layouts.read_mustc(root, f"{src}-{tgt}", split, report=report))


def read_direction(s: Settings, src: str, tgt: str, split: str, report, required: bool = True) -> list | None:
    """Utterances of one direction and split; a missing split raises a ValueError naming the direction (None when
    not `required`)."""
    try:
        return _read(s.dataset, s.root, src, tgt, split, report)
    except FileNotFoundError as e:
        if not required:
            return None
        raise ValueError(f"direction {src}-{tgt}: no {s.dataset} {split!r} data under data.manual_dir={str(s.root)!r} "
                         f"({e}); drop the direction from data.directions / data.eval_directions or add its "
                         "language's data") from None


def _reason(utt, ids, min_samples: int, max_seconds: float | None, max_tokens: int | None) -> str | None:
    if utt.duration * SAMPLE_RATE < min_samples:
        return "too_short"
    if max_seconds is not None and utt.duration > max_seconds:
        return "too_long"
    if max_tokens is not None and len(ids) > max_tokens:
        return "too_many_tokens"
    return None


def build_examples(s: Settings, utts: Sequence, direction: tuple[str, str], vocab, lang_id: int, report,
                   min_samples: int, max_seconds: float | None, max_tokens: int | None) -> list[Example]:
    """Tokenized examples of one direction, dropping (and counting in `report`) what the limits exclude."""
    out = []
    for u in utts:
        ids = encode_target(vocab, u.tgt_text, lang_id)
        why = _reason(u, ids, min_samples, max_seconds, max_tokens)
        if why:
            limit = {"too_short": f"< {min_samples} samples (the encoder's receptive field)",
                     "too_long": f"> data.max_seconds={max_seconds}",
                     "too_many_tokens": f"{len(ids)} target tokens > {max_tokens}"}[why]
            report.add(why, f"{direction[0]}-{direction[1]} {u.id}: {u.duration:.2f}s, {limit}")
            continue
        out.append(Example(u, tuple(ids), f"{direction[0]}-{direction[1]}"))
    return out


# -- audio and batches ------------------------------------------------------------------------------------------


def load_audio(utt) -> np.ndarray:
    """16 kHz mono float32 samples of an utterance's segment."""
    from mlst_jax.data.layouts import load_segment

    return load_segment(utt.audio_path, utt.offset, utt.duration, target_sr=SAMPLE_RATE)


def normalize(w: np.ndarray, cmvn: str) -> np.ndarray:
    """HF `Wav2Vec2FeatureExtractor` `do_normalize`: zero mean, unit variance per utterance ('utterance')."""
    w = np.asarray(w, np.float32)
    return (w - w.mean()) / np.sqrt(w.var() + 1e-7) if cmvn == "utterance" else w


@dataclasses.dataclass(frozen=True)
class Padding:
    """Batch shapes: waveforms to a multiple of `bucket` samples (at most `max_samples`), targets to a power of two
    >= 16 (at most `max_tokens`); `bucket` 0 pads everything to the maxima (one shape)."""

    max_samples: int
    bucket: int
    max_tokens: int

    def samples(self, longest: int) -> int:
        if not self.bucket:
            return self.max_samples
        return min(self.max_samples, -(-longest // self.bucket) * self.bucket)

    def tokens(self, longest: int) -> int:
        if not self.bucket:
            return self.max_tokens
        return min(self.max_tokens, max(MIN_TOKEN_BUCKET, 1 << math.ceil(math.log2(max(longest, 1)))))


def make_batch(examples: Sequence[Example], wavs: Sequence[np.ndarray], pad: Padding, cmvn: str,
               rows: int | None = None) -> dict:
    """The ST loss batch (`mlst_jax.xmef.finetune.st_loss_fn`); `rows` > len(examples) repeats the first example
    with zero loss weight."""
    from mlst_jax.xmef.data import decoder_batch

    n_real = len(examples)
    rows = rows or n_real
    idx = list(range(n_real)) + [0] * (rows - n_real)
    n = pad.samples(max(len(wavs[i]) for i in idx))
    x = np.zeros((rows, n), np.float32)
    lengths = np.zeros((rows,), np.int32)
    for j, i in enumerate(idx):
        w = normalize(wavs[i][:n], cmvn)
        x[j, :len(w)] = w
        lengths[j] = len(w)
    ids = [examples[i].ids for i in idx]
    dec_in, labels, weights = decoder_batch(ids, pad.tokens(max(len(r) for r in ids)))
    weights[n_real:] = 0.0
    return {"waveforms": x, "lengths": lengths, "dec_in": dec_in, "labels": labels, "weights": weights}


class TrainBatches:
    """`sample(rng)` for `loop.fit`: `batch_size` random training examples per call (directions weighted by
    `data.temperature`: p(direction) ∝ share ** (1 / T)), their audio loaded from disk by `threads` background
    threads a few batches ahead. The draw uses its own generator seeded with `seed` (fit's `rng` is ignored), so a
    run's batches depend on the seed alone."""

    def __init__(self, examples: Sequence[Example], batch_size: int, pad: Padding, cmvn: str, seed: int,
                 temperature: float = 1.0, threads: int = 4, depth: int | None = None):
        self.examples, self.batch_size, self.pad, self.cmvn = list(examples), batch_size, pad, cmvn
        counts = collections.Counter(e.direction for e in self.examples)
        share = {d: (n / len(self.examples)) ** (1.0 / temperature) for d, n in counts.items()}
        total = sum(share.values())
        p = np.array([share[e.direction] / total / counts[e.direction] for e in self.examples])
        self.p = None if temperature == 1.0 else p / p.sum()
        self.rng = np.random.default_rng(seed)
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="xmef-audio")
        self.depth = depth or threads + 1
        self.pending: collections.deque = collections.deque()

    def draw(self) -> list[int]:
        n = len(self.examples)
        return self.rng.choice(n, self.batch_size, replace=n < self.batch_size, p=self.p).tolist()

    def load(self, idx: Sequence[int]) -> dict:
        chosen = [self.examples[i] for i in idx]
        return make_batch(chosen, [load_audio(e.utt) for e in chosen], self.pad, self.cmvn)

    def __call__(self, _rng=None) -> dict:
        while len(self.pending) < self.depth:
            self.pending.append(self.pool.submit(self.load, self.draw()))
        return self.pending.popleft().result()

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True)
