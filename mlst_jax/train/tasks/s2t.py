"""The S2T Transformer family (seed 000): English speech as Kaldi fbank → one stream per target language, a
SentencePiece vocabulary with `<lang:xx>` tags trained on the targets, sharing plans over the target languages and
the auxiliary CTC loss on the transcript."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from mlst_jax.train.tasks.base import Stream, Task

logger = logging.getLogger(__name__)


class S2TTask(Task):
    family, input = "s2t", "fbank"

    def validate(self) -> None:
        from mlst_jax.models.s2t_transformer import NAMED_CONFIGS
        from mlst_jax.sharing.strategies import SCANNABLE, parse_strategy

        c = self.c
        if c.model.s2t.arch not in NAMED_CONFIGS:
            raise ValueError(f"model.s2t.arch={c.model.s2t.arch!r} is not one of {sorted(NAMED_CONFIGS)}")
        self.model_config(None)  # S2TConfig's own errors name the field
        if not c.data.tgt_langs:
            raise ValueError("data.tgt_langs is empty")
        for field in ("directions", "eval_directions", "lang_codes"):
            if c.data[field]:
                raise ValueError(f"data.{field}={c.data[field]!r} is an XMEF field; the S2T model translates "
                                 f"data.src_lang into every data.tgt_langs language")
        if c.data.dataset not in ("mustc", "covost2", "europarl_st", "synthetic"):
            raise ValueError(f"data.dataset={c.data.dataset!r} is not mustc, covost2, europarl_st or synthetic")
        for field in ("model", "encoder", "decoder"):
            if c.init[field]:
                raise ValueError(f"init.{field} loads XMEF parts; S2T runs start from init.run (a run) or "
                                 "from scratch")
        try:
            kind = parse_strategy(c.sharing.strategy)[0]
        except ValueError as e:
            raise ValueError(f"sharing.strategy: {e}") from None
        if c.model.scan_layers and kind not in SCANNABLE:
            raise ValueError(f"model.scan_layers=True needs sharing.strategy multilingual or bilingual, got "
                             f"{c.sharing.strategy!r}: the other plans address single layers (decoder/layers_i/...), "
                             f"which a scanned stack does not have; set model.scan_layers=False")

    # -- data -----------------------------------------------------------------------------------------------

    def streams(self) -> list[Stream]:
        return [Stream(t, self.c.data.src_lang, t) for t in self.c.data.tgt_langs]

    def load_vocab(self, workdir: str | Path, sources: dict[str, Any] | None = None):
        """`data.vocab`, or the vocabulary trained on the training targets into `<workdir>/vocab/spm`."""
        return self.target_vocab(workdir, sources, self.c.model.s2t.vocab_size, list(self.c.data.tgt_langs))

    def _ctc_chars(self) -> int:
        """CTC labels per training row (0: no auxiliary CTC loss)."""
        return self.c.data.ctc_max_chars if self.c.optim.ctc_weight > 0 else 0

    def _pipeline_fields(self, train: bool) -> dict:
        return {"specaugment": (self.c.data.specaugment or None) if train else None,
                "ctc_max_chars": self._ctc_chars()}

    # -- model ----------------------------------------------------------------------------------------------

    def model_config(self, vocab):
        """The S2TConfig (vocab_size from `vocab`; None: the config's `model.s2t.vocab_size`)."""
        from mlst_jax.data.ctc_labels import VOCAB_SIZE
        from mlst_jax.models.s2t_transformer import named_config

        c, m = self.c, self.c.model.s2t
        vocab_size = m.vocab_size if vocab is None else len(vocab)
        if vocab is not None and len(vocab) != m.vocab_size:
            logger.warning("model.s2t.vocab_size=%d but the vocabulary has %d pieces; using %d", m.vocab_size,
                           len(vocab), len(vocab))
            m.vocab_size = len(vocab)  # what the run's config.json records
        ctc = VOCAB_SIZE if c.optim.ctc_weight > 0 else 0
        return named_config(m.arch, vocab_size=vocab_size, tie_word_embeddings=m.tie_word_embeddings,
                            dtype=c.model.dtype, ctc_vocab_size=ctc, **self.layer_options(), **m.overrides.to_dict())

    def model(self, model_config):
        from mlst_jax.models.s2t_transformer import S2TTransformer

        return S2TTransformer(model_config)

    def abstract_params(self, model_config) -> Any:
        from mlst_jax.models.s2t_transformer import abstract_params

        return abstract_params(model_config)

    def trainable_mask(self, params: Any) -> Any:
        if self.c.finetune.trainable == "all":
            return None
        from mlst_jax.finetune.lna import trainable_mask

        return trainable_mask(params, self.c.finetune.trainable)

    # -- step -----------------------------------------------------------------------------------------------

    def train_keys(self, shared: bool) -> tuple[str, ...]:
        keys = ("features", "feature_lengths", "decoder_input", "target", "loss_weights", "valid")
        keys += ("ctc_labels", "ctc_label_paddings") if self._ctc_chars() else ()
        return keys + (() if shared else ("group_lang",))

    def _extra_structs(self, lead):
        n = self._ctc_chars()
        return {"ctc_labels": jax.ShapeDtypeStruct((*lead, n), jnp.int32),
                "ctc_label_paddings": jax.ShapeDtypeStruct((*lead, n), jnp.float32)}

    def step_options(self) -> dict:
        return {**super().step_options(), "ctc_weight": self.c.optim.ctc_weight}
