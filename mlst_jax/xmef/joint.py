"""The miniature's joint speech-text finetuning loop (the model: `mlst_jax.models.joint`)."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mlst_jax.data.vocab import EOS_ID, Vocab
from mlst_jax.finetune import lna
from mlst_jax.models.joint import JointConfig, JointXMEF
from mlst_jax.train.losses import label_smoothed_nll
from mlst_jax.xmef import data as xdata
from mlst_jax.xmef.loop import fit, optimizer
from mlst_jax.xmef.pretrain import StageConfig


def joint_loss_fn(model: JointXMEF, st_weight: float = 1.0, mt_weight: float = 1.0, label_smoothing: float = 0.1):
    """st_weight · ST loss + mt_weight · MT loss (each a mean over its target tokens); metrics `st_nll`, `mt_nll`."""

    def loss_fn(params, batch, rng):
        v = {"params": params}
        r1, r2 = jax.random.split(rng)
        st, st_valid = model.apply(v, batch["waveforms"], batch["lengths"], False, method=JointXMEF.encode,
                                   rngs={"dropout": r1})
        mt, mt_valid = model.apply(v, batch["src"], False, method=JointXMEF.encode_text, rngs={"dropout": r1})
        out = {}
        total = 0.0
        for name, enc, valid, weight in (("st", st, st_valid, st_weight), ("mt", mt, mt_valid, mt_weight)):
            logits = model.apply(v, batch[f"{name}_dec_in"], enc, valid, False, method=JointXMEF.decode,
                                 rngs={"dropout": r2})
            w = batch[f"{name}_weights"]
            loss, nll = label_smoothed_nll(logits, batch[f"{name}_labels"], w, label_smoothing)
            n = jnp.maximum(w.sum(), 1.0)
            total = total + weight * loss / n
            out[f"{name}_nll"] = nll / n
        return total, out

    return loss_fn


def joint_examples(corpus: xdata.Corpus, vocab: Vocab, directions: Sequence[tuple[str, str]], split: str = "train"):
    """(waveform, source transcript ids `<lang:x> tokens </s>`, target ids) per utterance of each direction."""
    out = []
    for src, tgt in directions:
        for i, w in corpus.utterances(split, src):
            s = corpus.sentences[split][i]
            out.append((w, [vocab.lang_id(src), *vocab.encode(s.text[src], add_eos=False), EOS_ID],
                        vocab.encode(s.text[tgt], lang=tgt)))
    return out


def joint_sampler(examples, batch_size: int, mt_batch_size: int, n_samples: int, max_len: int):
    """Batches of `batch_size` ST examples and `mt_batch_size` MT examples (other sentences, source transcripts)."""

    def sample(rng):
        st = rng.choice(len(examples), batch_size, replace=len(examples) < batch_size)
        mt = rng.choice(len(examples), mt_batch_size, replace=len(examples) < mt_batch_size)
        w, lengths = xdata.waveform_batch([examples[i][0] for i in st], n_samples)
        batch = {"waveforms": w, "lengths": lengths, "src": xdata.pad_ids([examples[i][1] for i in mt], max_len)}
        for name, idx in (("st", st), ("mt", mt)):
            dec_in, labels, weights = xdata.decoder_batch([examples[i][2] for i in idx], max_len)
            batch.update({f"{name}_dec_in": dec_in, f"{name}_labels": labels, f"{name}_weights": weights})
        return batch

    return sample


def joint_finetune(config: JointConfig, params: dict, examples, stage: StageConfig, n_samples: int, max_len: int,
                   variant: str = "all", st_weight: float = 1.0, mt_weight: float = 1.0, mt_batch_size: int = 0,
                   label_smoothing: float = 0.1, progress: bool = False) -> tuple[dict, dict]:
    """Trains ST and MT together (seed 001 finetunes every parameter here: `variant="all"`); `mt_batch_size` MT
    examples per step (default: `stage.batch_size`). Returns (params, history)."""
    if not examples:
        raise ValueError("no joint training examples (check the directions and the corpus languages)")
    mask = None if variant == "all" else lna.trainable_mask(params, variant, model=lna.XMEF)
    tx = optimizer(stage.lr, stage.steps, stage.warmup, trainable_mask=mask)
    sample = joint_sampler(examples, stage.batch_size, mt_batch_size or stage.batch_size, n_samples, max_len)
    loss = joint_loss_fn(JointXMEF(config), st_weight, mt_weight, label_smoothing)
    return fit(loss, params, tx, sample, stage.steps, stage.seed, "joint ST+MT", progress)
