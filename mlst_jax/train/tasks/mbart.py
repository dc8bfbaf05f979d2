"""mBART trained on text (`model.family = "mbart"`): translation directions and denoising, the text-model
pretraining stage of the XMEF miniature (a stand-in for mBART-50's pretraining).

The model is `model.xmef.decoder`'s mBART (encoder and decoder; exported to an HF directory by `export_hf` it is
an XMEF run's `init.decoder`). Streams: every direction of `data.directions` (source text → target text: the
corpus's transcripts and translations, plus `data.bitext/<src>-<tgt>.tsv` when present) and a denoising stream
`<l>-<l>` per language of `data.denoise_langs` (the language's source texts, span-masked as mBART's pretraining
does, back to themselves). Batches are text batches of the pipeline (`features="text"`: lengths and budgets in
source tokens).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlst_jax.convert.mbart import save_hf_mbart
from mlst_jax.data import batch_shapes as shapes
from mlst_jax.data import pipeline as pl
from mlst_jax.data.text_sources import ConcatSource, TranscriptTargets, read_bitext
from mlst_jax.models.mbart import MBart
from mlst_jax.train import inputs
from mlst_jax.train.tasks.base import Stream
from mlst_jax.train.tasks.xmef import XMEFTask


class MBartTask(XMEFTask):
    family, input = "mbart", "text"
    decodes = False
    joint_layers = 0

    def validate(self) -> None:
        c = self.c
        self.model_config(None)
        for field in ("model", "encoder", "decoder"):
            if c.init[field]:
                raise ValueError(f"init.{field}: mbart runs start from scratch")
        if c.finetune.trainable != "all":
            raise ValueError(f"finetune.trainable={c.finetune.trainable!r}: mbart trains every parameter")
        if c.train.eval_every > 0:
            raise ValueError("train.eval_every: mbart runs score no dev BLEU; set train.eval_every=0")
        if c.sharing.strategy != "multilingual" or c.init.run:
            raise ValueError("sharing.*: sharing plans are an S2T feature")
        if c.data.bitext and not Path(c.data.bitext).is_dir():
            raise ValueError(f"data.bitext={c.data.bitext!r} is not a directory")
        mt = {s.src for s in self._mt_streams()}
        missing = [l for l in c.data.denoise_langs if l not in mt]
        if missing:
            raise ValueError(f"data.denoise_langs {missing}: no direction of data.directions has these sources")

    # -- data -----------------------------------------------------------------------------------------------

    def _mt_streams(self) -> list[Stream]:
        return self.speech_streams()

    def streams(self) -> list[Stream]:
        return self._mt_streams() + [Stream(f"{l}-{l}", l, l) for l in self.c.data.denoise_langs]

    def eval_streams(self, split: str) -> list[Stream]:
        return self._mt_streams()

    def sources(self, split: str, streams: list[Stream] | None = None) -> dict[str, Any]:
        """TFDS text of every direction (+ its bitext file on the training split); a denoising stream reads the
        source texts of the first direction from its language."""
        mt = self._mt_streams()
        tfds = inputs.data_sources(self.c, mt, split)
        out = {}
        for s in mt:
            bitext = Path(self.c.data.bitext) / f"{s.src}-{s.tgt}.tsv" if self.c.data.bitext else None
            extra = [read_bitext(bitext, s.src, s.tgt)] if split == self.c.data.train_split and bitext and \
                bitext.is_file() else []
            out[s.name] = ConcatSource(tfds[s.name], *extra) if extra else tfds[s.name]
        for lang in self.c.data.denoise_langs:
            first = next(s for s in mt if s.src == lang)
            out[f"{lang}-{lang}"] = TranscriptTargets(out[first.name])
        return {s.name: out[s.name] for s in (streams or self.streams())}

    def metadata(self, split, streams, sources, vocab) -> dict[str, pl.SourceMeta]:
        return {s.name: pl.scan_source(sources[s.name], vocab, s.tgt, features="text") for s in streams}

    def load_vocab(self, workdir: str | Path, sources: dict[str, Any] | None = None):
        langs = list(dict.fromkeys(s.tgt for s in self.streams()))
        return self.target_vocab(workdir, sources, self.xmef_config().decoder.vocab_size, langs)

    def _pipeline_fields(self, train: bool) -> dict:
        return {"features": "text", "specaugment": None, "cmvn": None, "stratify": False, "min_frames": 1,
                "noise_streams": tuple(f"{l}-{l}" for l in self.c.data.denoise_langs)}

    # -- model ----------------------------------------------------------------------------------------------

    def model_config(self, vocab):
        cfg = self.xmef_config().decoder
        return cfg if vocab is None else cfg.replace(vocab_size=len(vocab))

    def model(self, model_config):
        return MBart(model_config)

    def abstract_params(self, model_config) -> Any:
        ids = jnp.zeros((1, 8), jnp.int32)
        return jax.eval_shape(lambda: self.model(model_config).init(jax.random.PRNGKey(0), ids, ids))["params"]

    def trainable_mask(self, params: Any) -> Any:
        return None

    def pretrained_params(self, model_config) -> Any | None:
        return None

    def train_keys(self, shared: bool) -> tuple[str, ...]:
        return "src_tokens", "decoder_input", "target", "loss_weights", "valid"

    def batch_structs(self, shape: shapes.BatchShape, shared: bool = True) -> dict[str, jax.ShapeDtypeStruct]:
        lead = shape.tokens[:-1]
        return {"src_tokens": jax.ShapeDtypeStruct(shape.features, jnp.int32),
                "decoder_input": jax.ShapeDtypeStruct(shape.tokens, jnp.int32),
                "target": jax.ShapeDtypeStruct(shape.tokens, jnp.int32),
                "loss_weights": jax.ShapeDtypeStruct(shape.tokens, jnp.float32),
                "valid": jax.ShapeDtypeStruct(lead, jnp.int32)}

    def step_options(self) -> dict:
        return {"label_smoothing": self.c.optim.label_smoothing}

    def summarize(self, bleu, split):
        return {}


def export_hf(model_config, params, directory: str | Path) -> Path:
    """Writes the trained model as an HF `MBartForConditionalGeneration` directory (what `init.decoder` takes)."""
    return save_hf_mbart(directory, model_config, jax.tree.map(np.asarray, params))
