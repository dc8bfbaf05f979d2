"""wav2vec 2.0 trained for ASR with CTC on characters (`model.family = "wav2vec2_ctc"`): the speech-encoder
pretraining stage of the XMEF miniature, a stand-in for self-supervised pretraining.

The encoder is `model.xmef`'s (so the result drops into an XMEF run as `init.encoder` once exported to an HF
directory, `export_hf`); the output layer predicts `mlst_jax.data.ctc_labels` characters of each utterance's
transcript (`src_text`: the speech of a direction's source language), from waveform batches of the directions of
`data.directions`. Evaluation during training is the dev CTC loss; `transcribe` decodes greedily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlst_jax.convert.wav2vec2 import save_hf_wav2vec2
from mlst_jax.data.ctc_labels import VOCAB_SIZE, label_text
from mlst_jax.models.wav2vec2 import Wav2Vec2ForCTC
from mlst_jax.train.ctc import ctc_loss_sums
from mlst_jax.train.tasks.base import Stream
from mlst_jax.train.tasks.xmef import XMEFTask


def ctc_sums(model, params, batch, label_smoothing, rng, plan=None, ctc_weight=0.0) -> dict[str, jax.Array]:
    """The CTC loss per character as the step's sums (`loss`, `nll`: summed over rows; `ntokens`: characters)."""
    kw = dict(deterministic=rng is None, rngs=None if rng is None else {"dropout": rng})
    logits, frames = model.apply({"params": params}, batch["features"], batch["feature_lengths"], **kw)
    valid = batch["valid"].astype(jnp.float32)
    total, chars = ctc_loss_sums(logits, frames, batch["ctc_labels"], batch["ctc_label_paddings"], valid)
    return {"loss": total, "nll": total, "ntokens": chars, "nsentences": valid.sum()}


class CTCTask(XMEFTask):
    family = "wav2vec2_ctc"
    decodes = False
    joint_layers = 0

    def validate(self) -> None:
        c = self.c
        self.model_config(None)
        if c.data.ctc_max_chars < 1:
            raise ValueError(f"data.ctc_max_chars={c.data.ctc_max_chars}: CTC training needs transcripts")
        if c.finetune.trainable != "all":
            raise ValueError(f"finetune.trainable={c.finetune.trainable!r}: wav2vec2_ctc trains every parameter")
        if c.train.eval_every > 0:
            raise ValueError("train.eval_every: wav2vec2_ctc runs score no dev BLEU; set train.eval_every=0")
        for field in ("model", "encoder", "decoder"):
            if c.init[field]:
                raise ValueError(f"init.{field}: wav2vec2_ctc starts from scratch")
        if c.sharing.strategy != "multilingual" or c.init.run:
            raise ValueError("sharing.*: sharing plans are an S2T feature")
        self.streams()

    def load_vocab(self, workdir: str | Path, sources: dict[str, Any] | None = None):
        """`data.vocab` or one trained on the targets (the pipeline counts target tokens; CTC does not use them)."""
        langs = list(dict.fromkeys(s.tgt for s in self.streams()))
        return self.target_vocab(workdir, sources, self.xmef_config().decoder.vocab_size, langs)

    def _pipeline_fields(self, train: bool) -> dict:
        return {**super()._pipeline_fields(train), "source_tokens": 0, "ctc_max_chars": self.c.data.ctc_max_chars}

    def eval_streams(self, split: str) -> list[Stream]:
        return self.streams()

    def model_config(self, vocab):
        return self.xmef_config().encoder.replace(vocab_size=VOCAB_SIZE)

    def model(self, model_config):
        return Wav2Vec2ForCTC(model_config)

    def abstract_params(self, model_config) -> Any:
        n = model_config.min_num_samples
        return jax.eval_shape(lambda: self.model(model_config).init(
            jax.random.PRNGKey(0), jnp.zeros((1, n)), jnp.full((1,), n, jnp.int32)))["params"]

    def trainable_mask(self, params: Any) -> Any:
        return None

    def pretrained_params(self, model_config) -> Any | None:
        return None

    def train_keys(self, shared: bool) -> tuple[str, ...]:
        return "features", "feature_lengths", "ctc_labels", "ctc_label_paddings", "valid"

    def _extra_structs(self, lead):
        n = self.c.data.ctc_max_chars
        return {"ctc_labels": jax.ShapeDtypeStruct((*lead, n), jnp.int32),
                "ctc_label_paddings": jax.ShapeDtypeStruct((*lead, n), jnp.float32)}

    def step_options(self) -> dict:
        return {"sums_fn": ctc_sums}

    def summarize(self, bleu, split):
        return {}


def transcribe(model_config, params, batches) -> list[tuple[int, str]]:
    """Greedy CTC transcripts `(example index, text)` of the valid rows of waveform `batches`."""
    model = Wav2Vec2ForCTC(model_config)
    run = jax.jit(lambda p, w, n: model.apply({"params": p}, w, n))
    out = []
    for b in batches:
        logits, frames = run(params, b["features"], b["feature_lengths"])
        ids, n = np.asarray(jnp.argmax(logits, -1)), np.asarray(frames.sum(-1))
        out += [(int(b["index"][r]), label_text(ids[r, : n[r]])) for r in np.flatnonzero(b["valid"])]
    return out


def export_hf(model_config, params, directory: str | Path) -> Path:
    """Writes the trained model as an HF `Wav2Vec2ForCTC` directory (what `init.encoder` takes)."""
    save_hf_wav2vec2(directory, model_config, jax.tree.map(np.asarray, params))
    return Path(directory)
