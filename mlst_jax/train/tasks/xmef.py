"""The XMEF family (seed 001): raw 16 kHz waveforms → wav2vec 2.0 → length adaptor → mBART decoder, one stream per
translation direction, LNA finetuning masks, pretrained parts from HF / fairseq checkpoints (`init.*`), and joint
speech-text training (`model.xmef.joint_shared_layers > 0`: the transcript is the MT source of every example).

Directions (`data.directions`, `data.eval_directions`): `x-en` pairs `data.src_langs` with the pivot
`data.src_lang` (English), `en-x` pairs the pivot with `data.tgt_langs`, `english-centric` both, `m2m` every source
of those with every target, `src-tgt` pairs as they are (`mlst_jax.data.directions`). Targets: `[language code,
pieces..., </s>]` in the decoder's vocabulary (mBART-50's `MBart50Vocab` of the pretrained decoder, or a
`<lang:xx>`-tagged `data.vocab` for models trained from scratch); decoder inputs `[</s>, code, pieces...]`; the
code is not in the loss (decoding forces it). Languages mBART-50 lacks (CoVoST 2's Catalan and Welsh) need
`data.lang_codes`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from mlst_jax.data import pipeline as pl
from mlst_jax.train import inputs
from mlst_jax.train.tasks.base import Stream, Task
from mlst_jax.data import directions as dirs

logger = logging.getLogger(__name__)

DATASETS = ("covost2", "europarl_st", "mustc")


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


def config_directions(spec: str, c, field: str = "data.directions") -> list[tuple[str, str]]:
    """The (src, tgt) directions `spec` names over the config's languages (see the module docstring)."""
    pivot = c.data.src_lang
    src_side = [pivot] + [l for l in _langs(c.data.src_langs) if l != pivot]
    tgt_side = [pivot] + [l for l in _langs(c.data.tgt_langs) if l != pivot]
    union = list(dict.fromkeys(src_side + tgt_side))
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not items:
        raise ValueError(f"{field} is empty; use x-en, en-x, english-centric, m2m or src-tgt pairs")
    out: list[tuple[str, str]] = []
    for item in items:
        try:
            if item == "x-en":
                new = dirs.parse_directions("x-en", src_side, pivot)
            elif item == "en-x":
                new = dirs.parse_directions("en-x", tgt_side, pivot)
            elif item == "english-centric":
                new = dirs.parse_directions("x-en", src_side, pivot) + dirs.parse_directions("en-x", tgt_side, pivot)
            elif item == "m2m":
                new = [(s, t) for s, t in dirs.parse_directions("m2m", union, pivot) if s in src_side and t in tgt_side]
            else:
                new = dirs.parse_directions(item, union, pivot)
        except ValueError as e:
            raise ValueError(f"{field}={spec!r}: {e} (languages: data.src_lang, data.src_langs, data.tgt_langs)") \
                from None
        out.extend(d for d in new if d not in out)
    if not out:
        raise ValueError(f"{field}={spec!r} selects no direction (data.src_langs / data.tgt_langs are empty?)")
    return out


def lang_code_map(spec: str) -> dict[str, str]:
    """`data.lang_codes` ("ca=es_XX,cy=fr_XX") as {language: mBART-50 code}."""
    from mlst_jax.models.mbart import mbart50_code

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


class XMEFTask(Task):
    family, input = "xmef", "waveform"

    @property
    def joint_layers(self) -> int:
        return self.c.model.xmef.joint_shared_layers

    # -- config ---------------------------------------------------------------------------------------------

    def validate(self) -> None:
        from mlst_jax.finetune import lna

        c = self.c
        xcfg = self.xmef_config()
        if self.joint_layers:
            from mlst_jax.models.joint import JointConfig

            try:
                JointConfig(xcfg, self.joint_layers)
            except ValueError as e:
                raise ValueError(f"model.xmef.joint_shared_layers: {e}") from None
        if c.data.dataset not in DATASETS:
            raise ValueError(f"data.dataset={c.data.dataset!r}: XMEF reads {', '.join(DATASETS)} (the synthetic "
                             f"corpus in those layouts: data.manual_dir=<corpus>/covost2 ...)")
        if c.data.features != "audio":
            raise ValueError(f"data.features={c.data.features!r}: XMEF reads waveforms (data.features='audio')")
        if c.data.specaugment:
            raise ValueError(f"data.specaugment={c.data.specaugment!r}: SpecAugment is on fbank; wav2vec 2.0 masks "
                             "its own features (model.xmef.encoder.mask_time_prob); set data.specaugment=''")
        if c.data.cmvn == "global":
            raise ValueError("data.cmvn='global' is fbank CMVN; XMEF normalizes each waveform (utterance) or not ('')")
        if c.optim.ctc_weight:
            raise ValueError(f"optim.ctc_weight={c.optim.ctc_weight}: XMEF has no CTC layer")
        if c.data.bitext:
            if not self.joint_layers:
                raise ValueError(f"data.bitext={c.data.bitext!r}: extra parallel text trains the joint model's text "
                                 "path (model.xmef.joint_shared_layers > 0)")
            if not Path(c.data.bitext).is_dir():
                raise ValueError(f"data.bitext={c.data.bitext!r} is not a directory")
            if not self.bitext_streams():
                names = ", ".join(f"{s.name}.tsv" for s in self.speech_streams())
                raise ValueError(f"data.bitext={c.data.bitext!r} holds no file of a training direction ({names})")
        if c.sharing.strategy != "multilingual" or c.init.run or c.sharing.iterative_every:
            raise ValueError("sharing.*: sharing plans are an S2T feature; XMEF runs sharing.strategy=multilingual "
                             "without init.run / sharing.iterative_every")
        for spec, field in ((c.data.directions, "data.directions"), (c.data.eval_directions, "data.eval_directions")):
            if spec or field == "data.directions":
                config_directions(spec, c, field)
        codes = lang_code_map(c.data.lang_codes)
        if not c.data.vocab and (c.init.model or c.init.decoder):  # an mBART-50 vocabulary
            from mlst_jax.models.mbart import mbart50_code

            for s in self.streams() + self.eval_streams(c.data.test_split):
                if s.tgt not in codes:
                    try:
                        mbart50_code(s.tgt)
                    except ValueError:
                        raise ValueError(
                            f"target language {s.tgt!r} has no mBART-50 language code (seed 001: CoVoST 2's Ca and "
                            f"Cy were never seen in mBART pretraining); drop it from the directions or map it to a "
                            f"code this run does not otherwise use, e.g. --config.data.lang_codes={s.tgt}=es_XX") \
                            from None
        lna_variant = lna.VARIANTS[lna.XMEF].get(c.finetune.trainable)
        if lna_variant is None:
            raise ValueError(f"finetune.trainable={c.finetune.trainable!r} is not an XMEF variant: "
                             f"{', '.join(lna.VARIANTS[lna.XMEF])}")
        if self.joint_layers and lna_variant.encoder != lna.ALL:
            raise ValueError(f"finetune.trainable={c.finetune.trainable!r} freezes the layers joint training shares "
                             f"between speech and text (model.xmef.joint_shared_layers={self.joint_layers}); joint "
                             f"training trains the encoder: use 'all' or 'lna-d'")
        from mlst_jax.train.tasks.xmef_pretrained import check_pretrained

        check_pretrained(xcfg, c.init, joint=bool(self.joint_layers))

    # -- data -----------------------------------------------------------------------------------------------

    def _directions(self, spec: str, field: str) -> list[Stream]:
        return [Stream(f"{s}-{t}", s, t) for s, t in config_directions(spec, self.c, field)]

    def speech_streams(self) -> list[Stream]:
        """The training directions' speech."""
        return self._directions(self.c.data.directions, "data.directions")

    def bitext_streams(self) -> list[Stream]:
        """Joint training's extra parallel text (seed 001's "+ Extra MT Data"): a text-only stream
        `<src>-<tgt>+bitext` per training direction with a `data.bitext/<src>-<tgt>.tsv` file."""
        if not (self.joint_layers and self.c.data.bitext):
            return []
        root = Path(self.c.data.bitext)
        return [Stream(f"{s.name}+bitext", s.src, s.tgt) for s in self.speech_streams()
                if (root / f"{s.name}.tsv").is_file()]

    def streams(self) -> list[Stream]:
        return self.speech_streams() + self.bitext_streams()

    def eval_streams(self, split: str) -> list[Stream]:
        if split == self.c.data.test_split and self.c.data.eval_directions:
            return self._directions(self.c.data.eval_directions, "data.eval_directions")
        return self.speech_streams()

    def sources(self, split: str, streams: list[Stream] | None = None) -> dict[str, Any]:
        from mlst_jax.data.text_sources import read_bitext

        streams = streams or self.streams()
        bitext = {s.name for s in self.bitext_streams()}
        out = inputs.data_sources(self.c, [s for s in streams if s.name not in bitext], split)
        for s in streams:
            if s.name in bitext:
                out[s.name] = read_bitext(Path(self.c.data.bitext) / f"{s.src}-{s.tgt}.tsv", s.src, s.tgt)
        return out

    def metadata(self, split, streams, sources, vocab) -> dict[str, pl.SourceMeta]:
        bitext = {s.name for s in self.bitext_streams()}
        out = inputs.source_metadata(self.c, self, [s for s in streams if s.name not in bitext], split, sources,
                                     vocab)
        for s in streams:
            if s.name in bitext:
                out[s.name] = pl.scan_source(sources[s.name], vocab, s.tgt, features=self.input, source_tokens=True,
                                             text_only=True)
        return out

    def load_vocab(self, workdir: str | Path, sources: dict[str, Any] | None = None):
        """`data.vocab`; else the pretrained decoder's mBART-50 vocabulary (with `data.lang_codes`); else, for a
        model without a pretrained decoder, one trained on the training targets into `<workdir>/vocab/spm`
        (`model.xmef.decoder.vocab_size` pieces, a `<lang:xx>` tag per target language)."""
        from mlst_jax.convert.xmef import MBart50Vocab

        pre = None if self.c.data.vocab else self.pretrained()
        if pre is not None:
            if not pre.spm.is_file():
                raise ValueError(f"{pre.spm.parent}: no {pre.spm.name} (the SentencePiece model MBart50Tokenizer "
                                 "saves); the targets are tokenized with it (or name a vocabulary: data.vocab)")
            return MBart50Vocab(pre.spm, lang_code_map(self.c.data.lang_codes))
        langs = list(dict.fromkeys(s.tgt for s in self.streams() + self.eval_streams(self.c.data.test_split)))
        return self.target_vocab(workdir, sources, self.xmef_config().decoder.vocab_size, langs)

    def _pipeline_fields(self, train: bool) -> dict:
        return {"features": "waveform", "specaugment": None, "stratify": False,
                "min_frames": self.xmef_config().encoder.min_num_samples,
                "source_tokens": self.c.data.source_tokens if self.joint_layers else 0,
                "text_streams": tuple(s.name for s in self.bitext_streams())}

    # -- model ----------------------------------------------------------------------------------------------

    def xmef_config(self):
        """The XMEFConfig of `model.xmef` with the run's compute dtype, remat and scan_layers."""
        from mlst_jax.models import wav2vec2
        from mlst_jax.models.mbart import MBartConfig
        from mlst_jax.models.xmef import XMEFConfig

        c, m = self.c, self.c.model.xmef
        run = {"dtype": c.model.dtype, **self.layer_options()}
        try:
            encoder = wav2vec2.named_config(m.encoder_arch, **{**m.encoder.to_dict(), **run})
            decoder = MBartConfig(**{**m.decoder.to_dict(), **run})
        except TypeError as e:
            raise ValueError(f"model.xmef.encoder / model.xmef.decoder: {e}") from None
        except KeyError as e:
            raise ValueError(f"model.xmef.encoder_arch={m.encoder_arch!r}: unknown ({e})") from None
        return XMEFConfig(encoder=encoder, decoder=decoder, adaptor_layers=m.adaptor_layers,
                          adaptor_kernel_size=m.adaptor_kernel_size, adaptor_stride=m.adaptor_stride,
                          adaptor_layer_norm=m.adaptor_layer_norm, adaptor_proj=m.adaptor_proj)

    def model_config(self, vocab):
        """The XMEFConfig (a JointConfig for joint training) with the decoder's vocabulary `vocab`'s size."""
        cfg = self.xmef_config()
        if vocab is not None and len(vocab) != cfg.decoder.vocab_size:
            if "vocab_size" in self.c.model.xmef.decoder:
                logger.warning("model.xmef.decoder.vocab_size=%d but the vocabulary has %d entries; using %d",
                               cfg.decoder.vocab_size, len(vocab), len(vocab))
            self.c.model.xmef.decoder.vocab_size = len(vocab)  # what the run's config.json records
            cfg = self.xmef_config()
        if self.joint_layers:
            from mlst_jax.models.joint import JointConfig

            return JointConfig(cfg, self.joint_layers)
        return cfg

    def model(self, model_config):
        from mlst_jax.models.xmef import XMEF

        if self.joint_layers:
            from mlst_jax.models.joint import JointXMEF

            return JointXMEF(model_config)
        return XMEF(model_config)

    def abstract_params(self, model_config) -> Any:
        if self.joint_layers:
            from mlst_jax.models.joint import abstract_params

            return abstract_params(model_config)
        from mlst_jax.models.xmef import abstract_params

        return abstract_params(model_config)

    def trainable_mask(self, params: Any) -> Any:
        if self.c.finetune.trainable == "all":
            return None
        from mlst_jax.finetune import lna

        return lna.trainable_mask(params, self.c.finetune.trainable, model=lna.XMEF)

    def pretrained(self):
        """The checked `init.*` parts (None: random initialization)."""
        from mlst_jax.train.tasks.xmef_pretrained import check_pretrained

        return check_pretrained(self.xmef_config(), self.c.init, joint=bool(self.joint_layers))

    def pretrained_params(self, model_config) -> Any | None:
        from mlst_jax.train.tasks.xmef_pretrained import load_pretrained_parts

        pre = self.pretrained()
        if pre is None:
            return None
        want = "utterance" if self.c.data.cmvn == "utterance" else "none"
        if pre.cmvn != want:
            raise ValueError(f"data.cmvn={self.c.data.cmvn!r} but the pretrained encoder's preprocessor_config.json "
                             f"says do_normalize={pre.cmvn == 'utterance'}; set data.cmvn="
                             f"{'utterance' if pre.cmvn == 'utterance' else chr(39) * 2}")
        xcfg = model_config.xmef if self.joint_layers else model_config
        return load_pretrained_parts(xcfg, pre, self.c.seed, self.joint_layers)[1]

    # -- step -----------------------------------------------------------------------------------------------

    stratified = False  # no sharing plans: plain [rows, ...] batches of mixed directions

    def train_keys(self, shared: bool) -> tuple[str, ...]:
        keys = ("features", "feature_lengths", "decoder_input", "target", "loss_weights", "valid")
        return keys + (("src_tokens",) if self.joint_layers else ()) + (("speech",) if self.bitext_streams() else ())

    def _extra_structs(self, lead):
        return {"src_tokens": jax.ShapeDtypeStruct((*lead, self.c.data.source_tokens), jnp.int32),
                "speech": jax.ShapeDtypeStruct(lead, jnp.int32)}

    def step_options(self) -> dict:
        return {**super().step_options(), **({"mt_weight": self.c.optim.mt_weight} if self.joint_layers else {})}

    # -- decoding -------------------------------------------------------------------------------------------

    def summarize(self, bleu: dict[str, float], split: str) -> dict[str, Any]:
        """Supervised and zero-shot averages and the X→Y matrix of seed 001 Table 6 (supervised cells marked)."""
        train = [(s.src, s.tgt) for s in self.streams()]
        scored = [(s.src, s.tgt) for s in self.eval_streams(split)]
        langs = list(dict.fromkeys([self.c.data.src_lang] + [l for d in train + scored for l in d]))
        zero = [d for d in dirs.zero_shot(train, langs) if d in scored]
        return {"avg_supervised": dirs.average(bleu, train), "avg_zero_shot": dirs.average(bleu, zero),
                "zero_shot": [f"{s}-{t}" for s, t in zero], "matrix": dirs.bleu_matrix(bleu, langs, train)}
