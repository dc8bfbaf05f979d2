"""What the trainer needs from a model family: one small interface, one subclass per family.

A task reads its config section once and answers: the streams a run trains on (one TFDS source each), the target
vocabulary, the model and its config, the input pipeline's settings, the batch keys and their static shapes, the
trainable mask, the pretrained weights a fresh run starts from, the loss options of the train step, and the
`Translator` that decodes for evaluation and export. `mlst_jax.train.trainer` runs any task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mlst_jax.data import batch_shapes as shapes
from mlst_jax.data import pipeline as pl
from mlst_jax.data.vocab import Vocab, train_vocab
from mlst_jax.train import distributed, inputs
from mlst_jax.train import sharding as shd
from mlst_jax.train.inputs import Stream
from mlst_jax.translator import Translator


class Task:
    """A model family's answers to the trainer (see the module docstring); subclasses set `family` and `input`
    ("fbank" or "waveform", the pipeline's `features`)."""

    family: str
    input: str

    def __init__(self, c: ml_collections.ConfigDict):
        self.c = c

    # -- config ---------------------------------------------------------------------------------------------

    def validate(self) -> None:
        """ValueError naming the field for anything of this family's config that would fail later."""
        raise NotImplementedError

    # -- data -----------------------------------------------------------------------------------------------

    def streams(self) -> list[Stream]:
        """The training streams, in the order of the batches' stream ids."""
        raise NotImplementedError

    def eval_streams(self, split: str) -> list[Stream]:
        """The streams scored on `split` (dev: the training streams)."""
        return self.streams()

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams())

    def sources(self, split: str, streams: list[Stream] | None = None) -> dict[str, Any]:
        """`{stream name: data source}` of `split` for `streams` (default: the training streams)."""
        return inputs.data_sources(self.c, streams or self.streams(), split)

    def metadata(self, split: str, streams: list[Stream], sources: dict[str, Any], vocab) -> dict[str, pl.SourceMeta]:
        """The pipeline's length metadata of every stream's source (cached next to the TFDS data)."""
        return inputs.source_metadata(self.c, self, streams, split, sources, vocab)

    def load_vocab(self, workdir: str | Path, sources: dict[str, Any] | None = None):
        """The target vocabulary (`encode(text, lang)`, `lang_id`, `decode`, `len`)."""
        raise NotImplementedError

    def target_vocab(self, workdir: str | Path, sources: dict[str, Any] | None, size: int, langs: list[str]):
        """The vocabulary `data.vocab` names (a SentencePiece model / prefix or an HF tokenizer dir), or the one
        trained into `<workdir>/vocab/spm` on the training targets with a `<lang:xx>` tag per language of `langs`
        (trained on first use, by process 0, which sends it to the other processes)."""
        c = self.c
        if c.data.vocab:
            path = Path(c.data.vocab)
            if path.is_dir():
                return Vocab.from_hf_dir(path)
            return Vocab.from_spm(path if path.suffix == ".model" else f"{path}.model")
        prefix = Path(workdir) / "vocab" / "spm"
        if distributed.broadcast_flag(not Path(f"{prefix}.model").is_file()):  # process 0's view decides
            if jax.process_index() == 0:
                sources = sources or self.sources(c.data.train_split)
                texts = [inputs.text(src[i]["tgt_text"]) for src in sources.values() for i in range(len(src))]
                prefix.parent.mkdir(parents=True, exist_ok=True)
                train_vocab(texts, prefix, size, langs)
            distributed.broadcast_file(f"{prefix}.model")
        return Vocab.from_spm(f"{prefix}.model")

    def pipeline_config(self, train: bool, **overrides) -> shapes.PipelineConfig:
        """The input pipeline's settings for training (`train`) or evaluation batches."""
        c = self.c
        d = c.data
        extra = {k: tuple(d[k]) for k in ("frame_buckets", "token_buckets") if d[k]}
        if "token_buckets" in extra:
            extra["max_tokens"] = extra["token_buckets"][-1]
        streams = self.streams()
        fields = dict(max_frames=d.max_frames, max_frames_per_batch=d.max_frames_per_batch,
                      langs=tuple(s.name for s in streams), targets=tuple(s.tgt for s in streams),
                      temperature=d.temperature, cmvn=d.cmvn or None, global_cmvn_path=d.global_cmvn_path or None,
                      seed=c.seed, **extra)
        return shapes.PipelineConfig(**{**fields, **self._pipeline_fields(train), **overrides})

    def _pipeline_fields(self, train: bool) -> dict:
        """The family's own `PipelineConfig` fields."""
        raise NotImplementedError

    def eval_batch_size(self, n_devices: int) -> int:
        """Rows per evaluation batch (a multiple of `n_devices`)."""
        b = self.c.eval.batch_size or max(1, self.c.data.max_frames_per_batch // self.c.data.max_frames)
        return max(n_devices, -(-b // n_devices) * n_devices)

    # -- model ----------------------------------------------------------------------------------------------

    def model_config(self, vocab):
        """The model's config for a run whose target vocabulary is `vocab`."""
        raise NotImplementedError

    def layer_options(self) -> dict:
        """`model.remat` and `model.scan_layers` where set: fields of every model config."""
        return {k: True for k in ("remat", "scan_layers") if self.c.model[k]}

    def model(self, model_config):
        """The flax module; its `__call__` takes the batch's model inputs (`state.MODEL_INPUTS`)."""
        raise NotImplementedError

    def abstract_params(self, model_config) -> Any:
        """The model's parameter shapes (ShapeDtypeStructs), nothing allocated."""
        raise NotImplementedError

    def trainable_mask(self, params: Any) -> Any:
        """The `finetune.trainable` mask over `params` (None when everything trains)."""
        raise NotImplementedError

    def pretrained_params(self, model_config) -> Any | None:
        """Host parameters a fresh run starts from (None: random initialization)."""
        return None

    # -- step -----------------------------------------------------------------------------------------------

    stratified = True  # batches are [streams, rows, ...] groups of one stream each (sharing plans need them)

    def batch_shardings(self, mesh, keys) -> dict:
        """The NamedSharding of every batch key: rows split over the mesh's batch axes."""
        if self.stratified:
            return shd.stratified_batch_shardings(mesh, keys)
        return {k: shd.batch_sharding(mesh, 1) for k in keys}

    def train_keys(self, shared: bool) -> tuple[str, ...]:
        """The batch keys a training step reads (under a fully shared plan or not)."""
        raise NotImplementedError

    def step_options(self) -> dict:
        """Keyword arguments of `step.make_train_step` beyond the model, optimizer and shardings."""
        return {"label_smoothing": self.c.optim.label_smoothing}

    def batch_structs(self, shape: shapes.BatchShape, shared: bool = True) -> dict[str, jax.ShapeDtypeStruct]:
        """ShapeDtypeStructs of a training batch of `shape` with the keys of `train_keys(shared)`."""
        lead = shape.tokens[:-1]
        structs = {"features": jax.ShapeDtypeStruct(shape.features, jnp.float32),
                   "feature_lengths": jax.ShapeDtypeStruct(lead, jnp.int32),
                   "decoder_input": jax.ShapeDtypeStruct(shape.tokens, jnp.int32),
                   "target": jax.ShapeDtypeStruct(shape.tokens, jnp.int32),
                   "loss_weights": jax.ShapeDtypeStruct(shape.tokens, jnp.float32),
                   "valid": jax.ShapeDtypeStruct(lead, jnp.int32),
                   "group_lang": jax.ShapeDtypeStruct(lead[:1], jnp.int32)}
        structs.update(self._extra_structs(lead))
        return {k: structs[k] for k in self.train_keys(shared)}

    def _extra_structs(self, lead: tuple[int, ...]) -> dict[str, jax.ShapeDtypeStruct]:
        return {}

    # -- decoding -------------------------------------------------------------------------------------------

    decodes = True  # evaluation decodes with `translator` and scores BLEU (False: the dev loss only)

    def translator(self, model_config, params, vocab):
        """A `Translator` over host `params` (evaluation, export)."""
        return Translator(model_config, params, vocab, "utterance" if self.c.data.cmvn == "utterance" else "none")

    def summarize(self, bleu: dict[str, float], split: str) -> dict[str, Any]:
        """Family-specific aggregates of `{stream: BLEU}` on `split` (beyond the average)."""
        return {}
