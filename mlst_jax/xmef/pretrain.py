"""The miniature's pretraining: a wav2vec 2.0-architecture encoder trained for ASR with CTC on synthetic speech, and an
mBART-architecture model trained on synthetic multilingual text (denoising + MT).

Stand-ins for the paper's self-supervised wav2vec 2.0 (LibriVox) and mBART-50 (CommonCrawl, then ML50 bitext): the
miniature has neither the data nor the compute for self-supervised pretraining, so the encoder learns from
transcripts (characters, CTC) and the text model from the synthetic grammar's sentences.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlst_jax.data.vocab import EOS_ID, PAD_ID, Vocab
from mlst_jax.models.mbart import MBart, MBartConfig
from mlst_jax.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC
from mlst_jax.train.losses import label_smoothed_nll
from mlst_jax.xmef import data as xdata
from mlst_jax.xmef.loop import fit, optimizer

# -- CTC ----------------------------------------------------------------------------------------------------------


def ctc_loss_fn(model: Wav2Vec2ForCTC):
    def loss_fn(params, batch, rng):
        logits, valid = model.apply({"params": params}, batch["waveforms"], batch["lengths"], deterministic=False,
                                    rngs={"dropout": rng})
        label_pad = (batch["labels"] == 0).astype(jnp.float32)
        per_utt = optax.ctc_loss(logits, (~valid).astype(jnp.float32), batch["labels"], label_pad)
        n_chars = jnp.maximum((1.0 - label_pad).sum(-1), 1.0)
        used = (batch["lengths"] > 0).astype(jnp.float32)
        loss = (per_utt / n_chars * used).sum() / jnp.maximum(used.sum(), 1.0)
        return loss, {}

    return loss_fn


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Steps, batch size and learning rate of one training stage."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 30
    seed: int = 0


def ctc_pretrain(config: Wav2Vec2Config, utterances: Sequence[tuple[np.ndarray, str]], chars: xdata.CharVocab,
                 stage: StageConfig, n_samples: int, max_chars: int = 64, progress: bool = False):
    """Trains `Wav2Vec2ForCTC(config)` (vocab_size = len(chars)) on (waveform, transcript) pairs; returns (params,
    history)."""
    if config.vocab_size != len(chars):
        raise ValueError(f"encoder vocab_size={config.vocab_size} != {len(chars)} CTC symbols (blank + characters)")
    model = Wav2Vec2ForCTC(config)
    labels = [chars.encode(t)[:max_chars] for _, t in utterances]

    def sample(rng):
        idx = rng.choice(len(utterances), stage.batch_size, replace=len(utterances) < stage.batch_size)
        w, lengths = xdata.waveform_batch([utterances[i][0] for i in idx], n_samples)
        return {"waveforms": w, "lengths": lengths, "labels": xdata.pad_ids([labels[i] for i in idx], max_chars, 0)}

    wav, lens = xdata.waveform_batch([utterances[0][0]], n_samples)
    params = jax.jit(model.init)(jax.random.PRNGKey(stage.seed), wav, lens)["params"]
    tx = optimizer(stage.lr, stage.steps, stage.warmup)
    return fit(ctc_loss_fn(model), params, tx, sample, stage.steps, stage.seed, "CTC pretraining", progress)


def ctc_transcribe(config: Wav2Vec2Config, params, wavs: Sequence[np.ndarray], chars: xdata.CharVocab,
                   n_samples: int, batch_size: int = 32) -> list[str]:
    """Greedy CTC transcripts."""
    model = Wav2Vec2ForCTC(config)
    run = jax.jit(lambda p, w, l: model.apply({"params": p}, w, l))
    out = []
    for start in range(0, len(wavs), batch_size):
        chunk = list(wavs[start:start + batch_size])
        w, lengths = xdata.waveform_batch(chunk + [chunk[0]] * (batch_size - len(chunk)), n_samples)
        logits, valid = run(params, w, lengths)
        ids, n = np.asarray(logits.argmax(-1)), np.asarray(valid.sum(-1))
        out.extend(chars.decode_ctc(ids[j, :n[j]]) for j in range(len(chunk)))
    return out


def char_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Levenshtein distance summed over pairs / reference characters."""
    errors = total = 0
    for h, r in zip(hyps, refs):
        prev = list(range(len(h) + 1))
        for i, rc in enumerate(r, 1):
            cur = [i]
            for j, hc in enumerate(h, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc)))
            prev = cur
        errors += prev[-1]
        total += len(r)
    return errors / max(total, 1)


# -- mBART ----------------------------------------------------------------------------------------------------------


def add_noise(ids: Sequence[int], rng: np.random.Generator, ratio: float = 0.35, mean_span: float = 2.0) -> list[int]:
    """mBART's span masking on one sentence: spans (Poisson lengths) covering about `ratio` of the tokens, each
    replaced by one mask token (`data.MASK_ID`)."""
    ids = list(ids)
    n_mask = int(round(ratio * len(ids)))
    masked = np.zeros(len(ids), bool)
    while masked.sum() < n_mask:
        span = max(1, int(rng.poisson(mean_span)))
        start = int(rng.integers(0, len(ids)))
        masked[start:start + span] = True
    out = []
    for i, t in enumerate(ids):
        if not masked[i]:
            out.append(t)
        elif i == 0 or not masked[i - 1]:
            out.append(xdata.MASK_ID)
    return out


def mbart_examples(texts: dict[str, list[str]], vocab: Vocab, directions: Sequence[tuple[str, str]],
                   denoise_langs: Sequence[str]) -> tuple[list, list]:
    """Encoded ([src tokens], src_lang) per sentence and language, and the (i, src, tgt) MT examples / (i, lang)
    denoising examples over the parallel `texts` ({lang: sentences})."""
    tokens = {lang: [vocab.encode(t, add_eos=False) for t in ts] for lang, ts in texts.items()}
    n = len(next(iter(texts.values())))
    tasks = [("mt", i, s, t) for i in range(n) for s, t in directions]
    tasks += [("dae", i, l, l) for i in range(n) for l in denoise_langs]
    return tokens, tasks


def mbart_source(tokens: Sequence[int], lang: str, vocab: Vocab) -> list[int]:
    """mBART-50 source: `<lang:x> tokens </s>`."""
    return [vocab.lang_id(lang), *tokens, EOS_ID]


def mbart_loss_fn(model: MBart, label_smoothing: float = 0.1):
    def loss_fn(params, batch, rng):
        logits = model.apply({"params": params}, batch["src"], batch["dec_in"], deterministic=False,
                             rngs={"dropout": rng})
        loss, nll = label_smoothed_nll(logits, batch["labels"], batch["weights"], label_smoothing)
        n = jnp.maximum(batch["weights"].sum(), 1.0)
        return loss / n, {"nll": nll / n}

    return loss_fn


def mbart_pretrain(config: MBartConfig, texts: dict[str, list[str]], vocab: Vocab, stage: StageConfig,
                   directions: Sequence[tuple[str, str]], denoise_langs: Sequence[str], max_len: int = 32,
                   label_smoothing: float = 0.1, progress: bool = False):
    """Trains `MBart(config)` on a mixture of MT (`directions`, pairs of `texts` languages) and denoising
    (`denoise_langs`) examples drawn uniformly; returns (params, history)."""
    if config.vocab_size != len(vocab):
        raise ValueError(f"mBART vocab_size={config.vocab_size} != {len(vocab)} pieces of the text vocabulary")
    model = MBart(config)
    tokens, tasks = mbart_examples(texts, vocab, directions, denoise_langs)
    if not tasks:
        raise ValueError("mBART pretraining has neither MT directions nor denoising languages")

    def sample(rng):
        src, tgt = [], []
        for k in rng.integers(0, len(tasks), stage.batch_size):
            kind, i, s, t = tasks[k]
            x = tokens[s][i]
            src.append(mbart_source(add_noise(x, rng) if kind == "dae" else x, s, vocab))
            tgt.append([vocab.lang_id(t), *tokens[t][i], EOS_ID])
        dec_in, labels, weights = xdata.decoder_batch(tgt, max_len)
        return {"src": xdata.pad_ids(src, max_len), "dec_in": dec_in, "labels": labels, "weights": weights}

    toks = np.full((1, max_len), PAD_ID, np.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(stage.seed), toks, toks)["params"]
    tx = optimizer(stage.lr, stage.steps, stage.warmup)
    return fit(mbart_loss_fn(model, label_smoothing), params, tx, sample, stage.steps, stage.seed,
               "mBART pretraining", progress)
