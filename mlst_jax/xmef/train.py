"""XMEF finetuning on a real corpus (`mlst xmef-train`): pretrained wav2vec 2.0 + new length adaptor + pretrained
mBART decoder, LNA-finetuned for speech translation on CoVoST 2, Europarl-ST or MuST-C, then saved as a
`Translator` directory and scored (BLEU per direction and the X→Y matrix of seed 001 Table 6).

    mlst xmef-train --config configs/xmef_covost_large.py --workdir runs/xmef_x_en \\
        --encoder ckpt/wav2vec2-large-lv60 --decoder ckpt/mbart-large-50 \\
        --config.data.manual_dir=data/covost2 --config.finetune.trainable=lna-ed
    mlst xmef-train --config configs/xmef_covost_large.py --workdir runs/xmef_x_en --init ckpt/xmef-hf-dir ...

Pretrained parts: `--encoder` an HF `Wav2Vec2Model` / `Wav2Vec2ForCTC` directory (or a fairseq wav2vec 2.0
checkpoint) and `--decoder` an HF `MBartForConditionalGeneration` directory holding the `sentencepiece.bpe.model`
of `MBart50Tokenizer`, composed with a new adaptor (`mlst_jax.xmef.finetune.compose`); or `--init` an HF
`SpeechEncoderDecoderModel` directory (wav2vec2 + adapter + mBART decoder, with the tokenizer file), adaptor
included.

Model config: the experiment config's `model.xmef` (`mlst_jax.xmef.config.model_config`) is the model. The
pretrained directories' own configs must describe the same architecture: every field of the encoder
(`Wav2Vec2Config`) and decoder (`MBartConfig`) that shapes the weights or the computation (sizes, layer counts,
norms, activations, token ids, ...) must be equal, and with `--init` also the adaptor's; a mismatch raises a
ValueError naming each field (`model.xmef.encoder.hidden_size is 1024 in the config, 768 in DIR/config.json`).
Checkpoints of another architecture need a config whose `model.xmef.encoder_arch` / `encoder` / `decoder` say so.
Only the run-time settings come from the config whatever the checkpoint says (`RUN_FIELDS`: dropouts, LayerDrop,
SpecAugment-style masking, compute dtype); `add_final_logits_bias` follows the checkpoint. The mBART *encoder*
fields are not compared (XMEF uses the mBART decoder only).

Data (`data.dataset` covost2 | europarl_st | mustc under `data.manual_dir`, read by `mlst_jax.xmef.corpus_data` with
`mlst_jax.data.layouts`): `train` of every `data.directions` direction, `data.test_split` of every
`data.eval_directions` direction (default: the training directions), and `data.eval_split` (dev) of the training
directions where it exists. Directions: `x-en` pairs `data.src_langs` with `data.src_lang` (English), `en-x` pairs
English with `data.tgt_langs`, `m2m` every source of those with every target, `src-tgt` pairs as they are
(`mlst_jax.xmef.directions`). CoVoST 2's Common Voice codes `zh-CN` / `sv-SE` are used for `zh` / `sv`. Audio is
read at 16 kHz mono (`layouts.load_segment`) and normalized per utterance (zero mean, unit variance) when the
encoder directory's `preprocessor_config.json` says `do_normalize` (HF's default). Training and dev utterances
longer than `data.max_seconds` or with more than `data.max_target_tokens` target tokens are dropped and counted;
utterances shorter than the encoder's receptive field are dropped everywhere. Targets: the decoder's SentencePiece
model in mBART-50's id layout (`MBart50Vocab`), labels `[lang code, pieces..., </s>]`, decoder inputs `[</s>, lang
code, pieces...]` (HF `MBart50Tokenizer(text_target=..., tgt_lang=...)` + `shift_tokens_right`), no loss on the code
(decoding forces it). Languages mBART-50 lacks (CoVoST 2's Catalan and Welsh) need `data.lang_codes`.

Training: `mlst_jax.xmef.loop.fit` with the ST loss of `mlst_jax.xmef.finetune` (label smoothing
`optim.label_smoothing`), Adam (0.9, 0.98) with linear warmup over `optim.warmup_updates` and cosine decay to 0 at
`train.max_updates` (`loop.optimizer`; `optim.schedule` and `optim.grad_accum` are not used), clipping at
`optim.clip_norm`, `data.batch_size` utterances per update; only the parameters of `finetune.trainable`
(`mlst_jax.finetune.lna`) are trained, the others have no optimizer state. No checkpoints are written during
training and a run does not resume. Joint speech-text finetuning (`model.xmef.joint_shared_layers > 0`, the
`:joint` config) is only in the miniature (`python -m mlst_jax.xmef.miniature --joint-shared-layers N`).

Output in `--workdir`: `config.json`, `model/` (`Translator.save`: `mlst translate --checkpoint WORKDIR/model`),
`results.json` (data counts and skips, loss curve, dev NLL, test BLEU per direction with sacreBLEU's tokenizer for
the target language, supervised / zero-shot averages and the X→Y matrix with supervised cells marked `*`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from mlst_jax.xmef import config as xconfig
from mlst_jax.xmef import directions as dirs
from mlst_jax.xmef.corpus_data import (DATASETS, SAMPLE_RATE, Example, Padding, TrainBatches, build_examples,
                                       config_directions, lang_code_map, load_audio, make_batch, read_direction,
                                       target_code)

log = logging.getLogger(__name__)

MODEL_DIR, RESULTS_FILE, CONFIG_FILE = "model", "results.json", "config.json"

# Fields taken from the experiment config whatever the pretrained checkpoint says.
RUN_FIELDS = {
    "encoder": frozenset({"vocab_size", "hidden_dropout", "activation_dropout", "attention_dropout",
                          "feat_proj_dropout", "final_dropout", "layerdrop", "apply_spec_augment", "mask_time_prob",
                          "mask_time_length", "mask_time_min_masks", "mask_feature_prob", "mask_feature_length",
                          "mask_feature_min_masks", "dtype"}),
    "decoder": frozenset({"dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop",
                          "decoder_layerdrop", "dtype", "add_final_logits_bias",
                          # the mBART encoder, which XMEF does not use
                          "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim"}),
}
ADAPTOR_FIELDS = ("adaptor_layers", "adaptor_kernel_size", "adaptor_stride", "adaptor_layer_norm", "adaptor_proj")


# -- config -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a run reads from the experiment config (validated)."""

    dataset: str
    root: Path
    train_dirs: tuple[tuple[str, str], ...]
    eval_dirs: tuple[tuple[str, str], ...]
    codes: dict
    test_split: str
    dev_split: str
    batch_size: int
    max_seconds: float
    bucket_seconds: float
    max_target_tokens: int
    loader_threads: int
    steps: int
    warmup: int
    lr: float
    clip_norm: float
    label_smoothing: float
    temperature: float
    variant: str
    seed: int
    progress: bool
    eval_batch_size: int
    eval_max_examples: int


def settings(c: ml_collections.ConfigDict) -> Settings:
    """Validates the experiment config for `mlst xmef-train`; ValueError naming the field."""
    if xconfig.family(c) != xconfig.FAMILY_XMEF:
        raise ValueError("model.family must be 'xmef' (e.g. configs/xmef_covost_large.py)")
    xconfig.model_config(c)  # model.xmef field errors
    joint = c.model.xmef.get("joint_shared_layers", 0)
    if joint:
        raise ValueError(f"model.xmef.joint_shared_layers={joint}: joint speech-text finetuning on a real corpus is "
                         "not implemented by mlst xmef-train (only ST finetuning is; the joint model exists in the "
                         "miniature: python -m mlst_jax.xmef.miniature --joint-shared-layers N)")
    dataset = c.data.dataset
    if dataset not in DATASETS:
        raise ValueError(f"data.dataset={dataset!r}: mlst xmef-train reads {', '.join(DATASETS)}")
    if not c.data.manual_dir:
        raise ValueError(f"data.manual_dir is not set (pass --config.data.manual_dir=DIR, the extracted {dataset} "
                         "release)")
    root = Path(c.data.manual_dir)
    if not root.is_dir():
        raise ValueError(f"data.manual_dir={str(root)!r} does not exist")
    train_dirs = config_directions(c.data.directions, c)
    eval_spec = xconfig.train_setting(c, "eval_directions")
    eval_dirs = config_directions(eval_spec, c, "data.eval_directions") if eval_spec else list(train_dirs)
    codes = lang_code_map(c)
    for _, tgt in train_dirs + eval_dirs:
        target_code(tgt, codes)
    s = Settings(
        dataset=dataset, root=root, train_dirs=tuple(train_dirs), eval_dirs=tuple(eval_dirs), codes=codes,
        test_split=c.data.test_split, dev_split=c.data.get("eval_split", "dev") or "",
        batch_size=int(xconfig.train_setting(c, "batch_size")),
        max_seconds=float(xconfig.train_setting(c, "max_seconds")),
        bucket_seconds=float(xconfig.train_setting(c, "bucket_seconds")),
        max_target_tokens=int(xconfig.train_setting(c, "max_target_tokens")),
        loader_threads=int(xconfig.train_setting(c, "loader_threads")),
        steps=int(c.train.max_updates), warmup=int(c.optim.warmup_updates), lr=float(c.optim.lr),
        clip_norm=float(c.optim.clip_norm), label_smoothing=float(c.optim.label_smoothing),
        temperature=float(c.data.get("temperature", 1.0)), variant=c.finetune.get("trainable", "all"),
        seed=int(c.get("seed", 0)), progress=bool(c.train.get("progress", True)),
        eval_batch_size=int(c.eval.get("batch_size", 0)) or int(xconfig.train_setting(c, "batch_size")),
        eval_max_examples=int(c.eval.get("max_examples", 0)))
    checks = (("data.batch_size", s.batch_size, s.batch_size >= 1),
              ("data.max_seconds", s.max_seconds, s.max_seconds > 0),
              ("data.bucket_seconds", s.bucket_seconds, s.bucket_seconds >= 0),
              ("data.max_target_tokens", s.max_target_tokens, s.max_target_tokens >= 3),
              ("data.loader_threads", s.loader_threads, s.loader_threads >= 1),
              ("train.max_updates", s.steps, s.steps >= 1), ("optim.lr", s.lr, s.lr > 0),
              ("optim.clip_norm", s.clip_norm, s.clip_norm >= 0),
              ("data.temperature", s.temperature, s.temperature > 0),
              ("optim.label_smoothing", s.label_smoothing, 0 <= s.label_smoothing < 1),
              ("eval.batch_size", s.eval_batch_size, s.eval_batch_size >= 1))
    for field, value, ok in checks:
        if not ok:
            raise ValueError(f"{field}={value} is out of range")
    if not 0 <= s.warmup < s.steps:
        raise ValueError(f"optim.warmup_updates={s.warmup} must be in [0, train.max_updates={s.steps})")
    return s


# -- pretrained parts -------------------------------------------------------------------------------------------


def _require_dir_kind(flag: str, path: Path, want: str, what: str, allow_file: bool = False) -> None:
    from mlst_jax.convert import hf_model_type

    if not path.exists():
        raise ValueError(f"{flag} {path}: does not exist")
    model_type = hf_model_type(path)
    if model_type == want or (model_type is None and allow_file and path.is_file()):
        return
    got = f"a {model_type!r} checkpoint (config.json model_type)" if model_type else "not an HF model directory"
    raise ValueError(f"{flag} {path}: {got}; expected {what}")


def _mismatches(want, got, skip: frozenset, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(want):
        if f.name in skip:
            continue
        a, b = getattr(want, f.name), getattr(got, f.name)
        if a != b:
            out.append(f"{prefix}{f.name} is {a!r} in the config, {b!r} in the checkpoint")
    return out


def check_agreement(config, source: str, encoder=None, decoder=None, adaptor=None) -> None:
    """ValueError naming every field where the checkpoint's config (`encoder`: Wav2Vec2Config, `decoder`:
    MBartConfig, `adaptor`: an XMEFConfig) differs from the experiment's `config` (an XMEFConfig)."""
    problems = []
    if encoder is not None:
        problems += _mismatches(config.encoder, encoder, RUN_FIELDS["encoder"], "model.xmef.encoder.")
    if decoder is not None:
        problems += _mismatches(config.decoder, decoder, RUN_FIELDS["decoder"], "model.xmef.decoder.")
    if adaptor is not None:
        problems += [f"model.xmef.{f} is {getattr(config, f)!r} in the config, {getattr(adaptor, f)!r} in the "
                     f"checkpoint" for f in ADAPTOR_FIELDS if getattr(config, f) != getattr(adaptor, f)]
    if problems:
        raise ValueError(f"{source} does not match the experiment config's model: " + "; ".join(problems)
                         + ". Use a checkpoint of the config's architecture, or a config whose model.xmef "
                           "(encoder_arch, encoder, decoder, adaptor_*) describes the checkpoint")


@dataclasses.dataclass
class Pretrained:
    """Where the pretrained parts come from, checked before anything heavy is loaded."""

    init: Path | None
    encoder: Path | None
    decoder: Path | None
    spm: Path
    cmvn: str
    trust_pickle: bool = False

    def describe(self) -> dict:
        if self.init:
            return {"init": str(self.init)}
        return {"encoder": str(self.encoder), "decoder": str(self.decoder)}


def check_pretrained(config, init=None, encoder=None, decoder=None, trust_pickle: bool = False) -> Pretrained:
    """Validates the `--init` / `--encoder` + `--decoder` arguments against the model config `config` (an
    XMEFConfig) from the directories' config.json files alone (no weights are read)."""
    from mlst_jax.convert import mbart as mbart_convert
    from mlst_jax.convert import wav2vec2 as w2v_convert
    from mlst_jax.convert import xmef as xmef_convert

    if init and (encoder or decoder):
        raise ValueError("pass either --init SPEECH_ENCODER_DECODER_DIR or --encoder W2V2_DIR --decoder MBART_DIR, "
                         "not both")
    if not init and not (encoder and decoder):
        raise ValueError("pass --init SPEECH_ENCODER_DECODER_DIR, or both --encoder W2V2_DIR and --decoder MBART_DIR")
    if init:
        init = Path(init)
        _require_dir_kind("--init", init, "speech-encoder-decoder", "an HF SpeechEncoderDecoderModel directory "
                                                                     "(wav2vec2 encoder + mbart decoder)")
        cfg = xmef_convert.config_from_hf(json.loads((init / "config.json").read_text()), str(init / "config.json"))
        check_agreement(config, f"--init {init}", cfg.encoder, cfg.decoder, cfg)
        text_dir, audio_dir = init, init
    else:
        encoder, decoder = Path(encoder), Path(decoder)
        _require_dir_kind("--encoder", encoder, "wav2vec2", "an HF Wav2Vec2Model / Wav2Vec2ForCTC directory "
                                                             "(config.json model_type 'wav2vec2') or a fairseq "
                                                             "wav2vec 2.0 checkpoint file", allow_file=True)
        _require_dir_kind("--decoder", decoder, "mbart", "an HF MBartForConditionalGeneration directory "
                                                          "(config.json model_type 'mbart')")
        if encoder.is_dir():
            enc = w2v_convert.config_from_hf(json.loads((encoder / "config.json").read_text()),
                                             str(encoder / "config.json"))
            check_agreement(config, f"--encoder {encoder}", encoder=enc)
        dec = mbart_convert.config_from_hf(json.loads((decoder / "config.json").read_text()),
                                           str(decoder / "config.json"))
        check_agreement(config, f"--decoder {decoder}", decoder=dec)
        text_dir, audio_dir = decoder, encoder if encoder.is_dir() else encoder.parent
    spm = text_dir / xmef_convert.MBART_SPM
    if not spm.is_file():
        raise ValueError(f"{text_dir}: no {xmef_convert.MBART_SPM} (the SentencePiece model MBart50Tokenizer saves); "
                         "the targets are tokenized with it")
    return Pretrained(init, encoder, decoder, spm, xmef_convert.waveform_normalization(audio_dir), trust_pickle)


def _fit_masked_spec_embed(config, enc_params: dict, source: str) -> dict:
    """Encoder params with HF's `masked_spec_embed` kept or dropped as the config's masking needs it."""
    enc_params = dict(enc_params)
    has = "masked_spec_embed" in enc_params
    if config.encoder.has_masked_spec_embed and not has:
        raise ValueError(f"{source} has no masked_spec_embed (it was pretrained without time/feature masking) but "
                         "the config masks (model.xmef.encoder mask_time_prob / mask_feature_prob > 0); set them "
                         "to 0 in the config")
    if has and not config.encoder.has_masked_spec_embed:
        enc_params.pop("masked_spec_embed")
    return enc_params


def load_model(config, pre: Pretrained, seed: int = 0) -> tuple[Any, dict]:
    """(XMEFConfig, params): the pretrained weights under the experiment's model config (`add_final_logits_bias`
    from the checkpoint); the adaptor is new unless `--init` holds one."""
    from mlst_jax.convert import load_pretrained
    from mlst_jax.models.xmef import abstract_params
    from mlst_jax.xmef.finetune import compose

    if pre.init:
        _, _, cfg, params = load_pretrained(pre.init)
        config = config.replace(decoder=config.decoder.replace(
            add_final_logits_bias=cfg.decoder.add_final_logits_bias))
        params = dict(params)
        params["encoder"] = _fit_masked_spec_embed(config, params["encoder"], f"--init {pre.init}")
    else:
        model, _, enc_cfg, enc_params = load_pretrained(pre.encoder, trust_pickle=pre.trust_pickle)
        if model != "wav2vec2":
            raise ValueError(f"--encoder {pre.encoder}: a {model} checkpoint; expected wav2vec 2.0")
        check_agreement(config, f"--encoder {pre.encoder}", encoder=enc_cfg)
        model, _, dec_cfg, dec_params = load_pretrained(pre.decoder)
        if model != "mbart":
            raise ValueError(f"--decoder {pre.decoder}: a {model} checkpoint; expected mBART")
        config = config.replace(decoder=config.decoder.replace(add_final_logits_bias=dec_cfg.add_final_logits_bias))
        enc_params = enc_params.get("wav2vec2", enc_params)
        enc_params = _fit_masked_spec_embed(config, enc_params, f"--encoder {pre.encoder}")
        adaptor = {f: getattr(config, f) for f in ADAPTOR_FIELDS}
        _, params = compose((config.encoder, enc_params), (config.decoder, dec_params), seed=seed, **adaptor)
    expected = jax.tree.map(lambda x: tuple(x.shape), abstract_params(config))
    got = jax.tree.map(lambda x: tuple(np.shape(x)), params)
    if expected != got:
        raise ValueError(f"the pretrained weights do not fit the model config: expected {expected}, got {got}")
    return config, params


# -- evaluation -------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _nll_fn(config):
    from mlst_jax.models.xmef import XMEF
    from mlst_jax.train.losses import label_smoothed_nll

    model = XMEF(config)

    @jax.jit
    def nll(params, batch):
        logits = model.apply({"params": params}, batch["waveforms"], batch["lengths"], batch["dec_in"])
        return label_smoothed_nll(logits, batch["labels"], batch["weights"], 0.0)[1], batch["weights"].sum()

    return nll


def dev_nll(config, params, examples: Sequence[Example], pad: Padding, cmvn: str, batch_size: int) -> dict:
    """Teacher-forced NLL per target token (the language code excluded) over `examples`, in batches padded as in
    training."""
    fn = _nll_fn(config)
    total = count = 0.0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = make_batch(chunk, [load_audio(e.utt) for e in chunk], pad, cmvn, rows=batch_size)
        nll, n = fn(params, batch)
        total, count = total + float(nll), count + float(n)
    return {"nll": total / max(count, 1.0), "tokens": int(count), "n": len(examples)}


def translate_utterances(translator, utts: Sequence, code: str, c: ml_collections.ConfigDict,
                         batch_size: int) -> list[str]:
    """Translations of `utts` (in order) with `Translator.translate`: batches of similar length, beam search with
    `eval.beam`, `eval.lenpen`, `eval.max_len_a`, `eval.max_len_b`."""
    order = sorted(range(len(utts)), key=lambda i: utts[i].duration)
    out: list[str | None] = [None] * len(utts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        texts = translator.translate([load_audio(utts[i]) for i in chunk], SAMPLE_RATE, code,
                                     beam_size=int(c.eval.beam), length_penalty=float(c.eval.lenpen),
                                     max_len_a=float(c.eval.max_len_a), max_len_b=int(c.eval.max_len_b))
        for i, text in zip(chunk, texts):
            out[i] = text
    return out


# -- the run ----------------------------------------------------------------------------------------------------


def _echo(msg: str) -> None:
    print(msg, flush=True)


def train_xmef(c: ml_collections.ConfigDict, workdir: str | Path, init: str | Path | None = None,
               encoder: str | Path | None = None, decoder: str | Path | None = None, trust_pickle: bool = False,
               echo=_echo) -> tuple[dict, Any]:
    """Finetunes XMEF as the module docstring describes; returns (results, the finetuned `Translator`) and writes
    `workdir/{config.json, model/, results.json}`. ValueError (naming the config field or flag) for anything wrong
    with the config, the pretrained directories or the data, raised before the weights are loaded."""
    from mlst_jax.convert.xmef import MBart50Vocab
    from mlst_jax.data.layouts import SkipReport
    from mlst_jax.evaluate.bleu import corpus_bleu
    from mlst_jax.finetune import lna
    from mlst_jax.models.xmef import XMEF
    from mlst_jax.train.optim import count_trainable
    from mlst_jax.translator import Translator
    from mlst_jax.xmef.finetune import st_loss_fn
    from mlst_jax.xmef.loop import fit, optimizer

    start = time.perf_counter()
    s = settings(c)
    want = xconfig.model_config(c)
    pre = check_pretrained(want, init, encoder, decoder, trust_pickle)
    vocab = MBart50Vocab(pre.spm)
    if len(vocab) != want.decoder.vocab_size:
        raise ValueError(f"{pre.spm}: {vocab.sp_size} pieces give an mBART-50 vocabulary of {len(vocab)}, but the "
                         f"decoder's vocab_size is {want.decoder.vocab_size}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CONFIG_FILE).write_text(c.to_json_best_effort(indent=1) + "\n")
    lang_ids = {t: vocab.lang_id(target_code(t, s.codes)) for _, t in s.train_dirs + s.eval_dirs}
    min_samples = want.encoder.min_num_samples
    max_tokens = min(s.max_target_tokens, want.decoder.max_position_embeddings)
    pad = Padding(int(math.ceil(s.max_seconds * SAMPLE_RATE)), int(round(s.bucket_seconds * SAMPLE_RATE)),
                  max_tokens)

    # data: everything is read (and every error raised) before the weights are loaded
    reports = {split: SkipReport() for split in ("train", "dev", "test")}
    counts: dict[str, dict[str, int]] = {"train": {}, "dev": {}, "test": {}}
    train, dev, test = [], [], {}
    for src, tgt in s.train_dirs:
        key = f"{src}-{tgt}"
        ex = build_examples(s, read_direction(s, src, tgt, "train", reports["train"]), (src, tgt), vocab,
                            lang_ids[tgt], reports["train"], min_samples, s.max_seconds, max_tokens)
        if not ex:
            raise ValueError(f"direction {key}: no usable training utterances in {s.root} "
                             f"({reports['train'].summary()})")
        counts["train"][key] = len(ex)
        train += ex
        if s.dev_split:
            utts = read_direction(s, src, tgt, s.dev_split, reports["dev"], required=False)
            if utts is not None:
                ex = build_examples(s, utts, (src, tgt), vocab, lang_ids[tgt], reports["dev"], min_samples,
                                    s.max_seconds, max_tokens)
                if s.eval_max_examples:
                    ex = ex[:s.eval_max_examples]
                counts["dev"][key] = len(ex)
                dev += ex
    for src, tgt in s.eval_dirs:
        key = f"{src}-{tgt}"
        utts = read_direction(s, src, tgt, s.test_split, reports["test"])
        kept = []
        for u in utts:
            if u.duration * SAMPLE_RATE < min_samples:
                reports["test"].add("too_short", f"{key} {u.id}: {u.duration:.3f}s < {min_samples} samples")
            else:
                kept.append(u)
        if s.eval_max_examples:
            kept = kept[:s.eval_max_examples]
        if not kept:
            raise ValueError(f"direction {key}: no usable {s.test_split!r} utterances ({reports['test'].summary()})")
        test[key] = (tgt, kept)
        counts["test"][key] = len(kept)
    for split, report in reports.items():
        report.log(log, f"xmef-train {split}")
    echo(f"data ({s.dataset}): train {sum(counts['train'].values())} utterances in {len(counts['train'])} "
         f"directions, dev {sum(counts['dev'].values())}, {s.test_split} {sum(counts['test'].values())}; skipped "
         + ", ".join(f"{split} {r.total}" for split, r in reports.items()))

    # model
    config, params = load_model(want, pre, s.seed)
    mask = lna.trainable_mask(params, s.variant, model=lna.XMEF)
    trained, total = count_trainable(params, mask), count_trainable(params)
    echo(f"XMEF {total:,} parameters; {s.variant} trains {trained:,} ({100 * trained / total:.1f}%)")

    # finetune
    tx = optimizer(s.lr, s.steps, s.warmup, clip_norm=s.clip_norm, trainable_mask=mask)
    batches = TrainBatches(train, s.batch_size, pad, pre.cmvn, s.seed, s.temperature, s.loader_threads)
    try:
        params, history = fit(st_loss_fn(XMEF(config), s.label_smoothing), params, tx, batches, s.steps, s.seed,
                              desc="XMEF ST", progress=s.progress)
    finally:
        batches.close()
    translator = Translator(config, params, vocab, pre.cmvn)
    translator.save(workdir / MODEL_DIR)
    echo(f"loss {history['first_loss']:.3f} → {history['last_loss']:.3f} in {s.steps} updates "
         f"({history['seconds']:.0f}s); model saved to {workdir / MODEL_DIR}")

    # evaluate
    dev_scores = {}
    for key in counts["dev"]:
        ex = [e for e in dev if e.direction == key]
        if ex:
            dev_scores[key] = dev_nll(config, translator.params, ex, pad, pre.cmvn, s.batch_size)
    test_scores, bleu = {}, {}
    for key, (tgt, utts) in test.items():
        hyps = translate_utterances(translator, utts, target_code(tgt, s.codes), c, s.eval_batch_size)
        refs = [u.tgt_text for u in utts]
        result = corpus_bleu(hyps, refs, tgt)
        bleu[key] = result.score
        test_scores[key] = {"bleu": result.score, "n": len(refs), "tokenizer": result.tokenizer,
                            "signature": result.signature, "examples": list(zip(hyps[:3], refs[:3]))}
        echo(f"{key}: BLEU {result.score:.2f} ({len(refs)} utterances)")
    langs = list(dict.fromkeys([c.data.src_lang] + [l for d in s.train_dirs + s.eval_dirs for l in d]))
    zero = [d for d in dirs.zero_shot(s.train_dirs, langs) if d in s.eval_dirs]
    matrix = dirs.bleu_matrix(bleu, langs, s.train_dirs)
    echo(f"BLEU ({s.test_split}):\n{matrix}")
    results = {
        "pretrained": pre.describe(), "workdir": str(workdir), "model_dir": str(workdir / MODEL_DIR),
        "dataset": s.dataset, "manual_dir": str(s.root), "variant": s.variant, "trained_params": trained,
        "total_params": total, "cmvn": pre.cmvn,
        "data": {"counts": counts, "skipped": {k: dict(r.counts) for k, r in reports.items()},
                 "skipped_examples": {k: r.examples for k, r in reports.items()}},
        "train": {"steps": s.steps, "batch_size": s.batch_size, "first_loss": history["first_loss"],
                  "last_loss": history["last_loss"], "loss": history["loss"], "seconds": history["seconds"]},
        "dev": dev_scores, "test_split": s.test_split, "test": test_scores, "bleu": bleu,
        "supervised": [f"{a}-{b}" for a, b in s.train_dirs], "zero_shot": [f"{a}-{b}" for a, b in zero],
        "avg_supervised": dirs.average(bleu, s.train_dirs), "avg_zero_shot": dirs.average(bleu, zero),
        "matrix": matrix, "langs": langs, "seconds": time.perf_counter() - start,
    }
    (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2, ensure_ascii=False, default=float) + "\n")
    return results, translator


# -- CLI --------------------------------------------------------------------------------------------------------


def _xmef_train(args) -> int:
    from mlst_jax.train.cli_train import load_config

    config = load_config(args.config, args.config_overrides)
    try:
        results, _ = train_xmef(config, args.workdir, init=args.init, encoder=args.encoder, decoder=args.decoder,
                                trust_pickle=args.trust_pickle)
    except FloatingPointError as e:
        print(f"mlst xmef-train: error: {e}", file=sys.stderr)
        return 1
    summary = {k: results[k] for k in ("model_dir", "variant", "trained_params", "bleu", "avg_supervised",
                                       "avg_zero_shot")}
    print(json.dumps({**summary, "results": str(Path(args.workdir) / RESULTS_FILE)}, default=float), flush=True)
    return 0


def add_xmef_commands(subparsers) -> None:
    """Registers `xmef-train` on an argparse subparsers object (`--config.FIELD=VALUE` overrides accepted)."""
    p = subparsers.add_parser(
        "xmef-train", help="finetune XMEF (pretrained wav2vec 2.0 + adaptor + mBART decoder) on CoVoST 2, "
                           "Europarl-ST or MuST-C; save WORKDIR/model and score BLEU per direction")
    p.add_argument("--config", required=True, help="XMEF experiment config FILE[:ARG] (e.g. "
                                                   "configs/xmef_covost_large.py); then --config.FIELD=VALUE overrides")
    p.add_argument("--workdir", required=True, help="config.json, model/ (Translator directory) and results.json")
    p.add_argument("--init", help="HF SpeechEncoderDecoderModel directory (wav2vec2 + adapter + mBART decoder, with "
                                  "sentencepiece.bpe.model)")
    p.add_argument("--encoder", help="HF Wav2Vec2Model directory (or a fairseq wav2vec 2.0 checkpoint)")
    p.add_argument("--decoder", help="HF MBartForConditionalGeneration directory with sentencepiece.bpe.model")
    p.add_argument("--trust-pickle", action="store_true",
                   help="fully unpickle a fairseq --encoder checkpoint (only for files you trust)")
    p.set_defaults(func=_xmef_train, accepts_config_overrides=True)
