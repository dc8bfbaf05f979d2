"""XMEF finetuning for speech translation: compose a pretrained encoder and decoder with a new length adaptor,
train the parameters of an LNA variant (the rest frozen, without optimizer state), decode and score BLEU."""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlst_jax.convert.xmef import xmef_from_pretrained
from mlst_jax.data.vocab import Vocab
from mlst_jax.decode.beam_search import beam_search, strip_and_decode_ids
from mlst_jax.evaluate.bleu import corpus_bleu
from mlst_jax.finetune import lna
from mlst_jax.models.mbart import MBartConfig
from mlst_jax.models.wav2vec2 import Wav2Vec2Config
from mlst_jax.models.xmef import XMEF, XMEFConfig, init_decode_cache
from mlst_jax.train.losses import label_smoothed_nll
from mlst_jax.train.optim import count_trainable
from mlst_jax.xmef import data as xdata
from mlst_jax.xmef.loop import fit, optimizer
from mlst_jax.xmef.pretrain import StageConfig

Example = tuple[np.ndarray, list[int]]  # waveform, target ids [<lang:y>, tokens..., </s>]


def compose(encoder: tuple[Wav2Vec2Config, Any], decoder: tuple[MBartConfig, Any], seed: int = 0,
            **adaptor) -> tuple[XMEFConfig, dict]:
    """XMEF from a wav2vec 2.0 `(config, params)` (the `wav2vec2` subtree of a CTC model is taken when given the
    whole CTC tree) and an mBART `(config, params)`; the adaptor is new (`adaptor_*` keywords of `XMEFConfig`)."""
    enc_cfg, enc_params = encoder
    if "wav2vec2" in enc_params:
        enc_params = enc_params["wav2vec2"]
    return xmef_from_pretrained((enc_cfg, enc_params), decoder, seed=seed, **adaptor)


def random_init(config: XMEFConfig, seed: int = 0) -> dict:
    """Freshly initialized XMEF parameters (the baseline without pretraining)."""
    n = config.encoder.min_num_samples * 4
    init = jax.jit(XMEF(config).init)
    return init(jax.random.PRNGKey(seed), jnp.zeros((1, n)), jnp.full((1,), n, jnp.int32),
                jnp.full((1, 4), config.pad_token_id, jnp.int32))["params"]


def st_loss_fn(model: XMEF, label_smoothing: float = 0.1):
    def loss_fn(params, batch, rng):
        logits = model.apply({"params": params}, batch["waveforms"], batch["lengths"], batch["dec_in"],
                             deterministic=False, rngs={"dropout": rng})
        loss, nll = label_smoothed_nll(logits, batch["labels"], batch["weights"], label_smoothing)
        n = jnp.maximum(batch["weights"].sum(), 1.0)
        return loss / n, {"nll": nll / n}

    return loss_fn


def st_examples(corpus: xdata.Corpus, vocab: Vocab, directions: Sequence[tuple[str, str]],
                split: str = "train") -> list[Example]:
    """(waveform, target ids) for every utterance of `split` in each (src, tgt) direction."""
    out = []
    for src, tgt in directions:
        sentences = corpus.sentences[split]
        out.extend((w, vocab.encode(sentences[i].text[tgt], lang=tgt)) for i, w in corpus.utterances(split, src))
    return out


def st_sampler(examples: Sequence[Example], batch_size: int, n_samples: int, max_len: int):
    def sample(rng):
        idx = rng.choice(len(examples), batch_size, replace=len(examples) < batch_size)
        w, lengths = xdata.waveform_batch([examples[i][0] for i in idx], n_samples)
        dec_in, labels, weights = xdata.decoder_batch([examples[i][1] for i in idx], max_len)
        return {"waveforms": w, "lengths": lengths, "dec_in": dec_in, "labels": labels, "weights": weights}

    return sample


def finetune(config: XMEFConfig, params: dict, examples: Sequence[Example], variant: str, stage: StageConfig,
             n_samples: int, max_len: int, label_smoothing: float = 0.1, progress: bool = False, desc: str = "ST",
             step_fn=None) -> tuple[dict, dict]:
    """Trains the parameters `variant` selects (`mlst_jax.finetune.lna`) on ST examples; returns (params, history
    with `trained_params`). `step_fn`: a previous run's `history["step_fn"]` with the same config and variant."""
    if not examples:
        raise ValueError("no ST training examples (check the directions and the corpus languages)")
    mask = lna.trainable_mask(params, variant, model=lna.XMEF)
    tx = optimizer(stage.lr, stage.steps, stage.warmup, trainable_mask=mask)
    sample = st_sampler(examples, stage.batch_size, n_samples, max_len)
    params, history = fit(st_loss_fn(XMEF(config), label_smoothing), params, tx, sample, stage.steps, stage.seed,
                          desc, progress, step_fn)
    history["trained_params"] = count_trainable(params, mask)
    return params, history


def _model(config) -> tuple[Any, XMEFConfig]:
    """The module of an `XMEFConfig` or a joint `JointConfig`, and its XMEF config."""
    from mlst_jax.models.joint import JointConfig, JointXMEF

    if isinstance(config, JointConfig):
        return JointXMEF(config), config.xmef
    return XMEF(config), config


@functools.lru_cache(maxsize=8)
def _search_fn(config, batch: int, beam: int, max_len: int):
    model, config = _model(config)

    @jax.jit
    def search(params, waveforms, lengths, prefix):
        enc, valid = model.apply({"params": params}, waveforms, lengths, method=type(model).encode)
        kv = model.apply({"params": params}, enc, method=type(model).precompute_cross_kv)

        def step(tok, cache, i):
            return model.apply({"params": params}, tok, cache, i, kv, valid, method=type(model).decode_step)

        return beam_search(step, init_decode_cache(config, batch * beam, max_len + 1), batch_size=batch,
                           beam_size=beam, max_len=max_len, decoder_start_id=config.decoder_start_token_id,
                           eos_id=config.eos_token_id, pad_id=config.pad_token_id, prefix=prefix, max_steps=max_len)

    return search


def translate(config, params: dict, wavs: Sequence[np.ndarray], lang_id: int, n_samples: int,
              max_len: int, beam: int = 1, batch_size: int = 32) -> list[list[int]]:
    """Best hypothesis per waveform (ids after the forced `lang_id`, without `</s>`); `config`: an `XMEFConfig` or
    a joint `JointConfig`."""
    search = _search_fn(config, batch_size, beam, max_len)
    xcfg = _model(config)[1]
    out = []
    for start in range(0, len(wavs), batch_size):
        chunk = list(wavs[start:start + batch_size])
        w, lengths = xdata.waveform_batch(chunk + [chunk[0]] * (batch_size - len(chunk)), n_samples)
        res = search(params, w, lengths, np.full((batch_size, 1), lang_id, np.int32))
        ids = strip_and_decode_ids(res, xcfg.eos_token_id, xcfg.pad_token_id)[:len(chunk)]
        out.extend(row[1:] if row and row[0] == lang_id else row for row in ids)
    return out


def evaluate(config, params: dict, corpus: xdata.Corpus, vocab: Vocab,
             directions: Sequence[tuple[str, str]], n_samples: int, max_len: int, beam: int = 1,
             split: str = "test", examples: int = 0) -> dict[str, dict]:
    """{"src-tgt": {"bleu", "hyps" (first 3), "n"}} on `split` (the first `examples` utterances when > 0)."""
    results = {}
    for src, tgt in directions:
        utts = corpus.utterances(split, src)
        if examples:
            utts = utts[:examples]
        refs = [corpus.sentences[split][i].text[tgt] for i, _ in utts]
        ids = translate(config, params, [w for _, w in utts], vocab.lang_id(tgt), n_samples, max_len, beam)
        hyps = [vocab.decode(row) for row in ids]
        results[f"{src}-{tgt}"] = {"bleu": corpus_bleu(hyps, refs, tgt).score, "n": len(refs),
                                   "examples": list(zip(hyps[:3], refs[:3]))}
    return results
