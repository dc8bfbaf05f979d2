"""The one config schema of both model families: every field with its default and a one-line comment, and the
validation that runs before anything is compiled or read.

An experiment config (`configs/*.py`) starts from `base_config()` and changes fields; nothing else in the project
invents a field or a default. `validate` raises a ValueError naming the field for anything that would fail later
(unknown fields are already refused by `--config.FIELD=VALUE` parsing, which locks the config).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from mlst_jax.train.tasks import get_task

MUSTC_LANGS = ("de", "es", "fr", "it", "nl", "pt", "ro", "ru")
KNOWN_LANGS = frozenset(MUSTC_LANGS + ("en", "ca", "fa", "et", "mn", "tr", "ar", "sv", "lv", "sl", "ta", "ja", "id",
                                       "cy", "zh", "pl", "cs", "el", "hu", "fi", "sk", "bg", "lt", "mt", "hr", "da",
                                       "ko", "vi", "uk", "he", "hi"))


def _s2t_model() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.arch = "s2t_transformer_m"  # named S2TConfig (mlst_jax.models.s2t_transformer.NAMED_CONFIGS)
    m.overrides = ml_collections.ConfigDict()  # S2TConfig fields over the named config, e.g. {"dropout": 0.1}
    m.vocab_size = 10000  # SentencePiece pieces trained on the targets (set to the vocabulary's size at run time)
    m.tie_word_embeddings = False  # the output projection shares the target embedding
    return m


def _xmef_model() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.encoder_arch = "large_lv60"  # named wav2vec 2.0 config (mlst_jax.models.wav2vec2.NAMED_CONFIGS)
    m.encoder = ml_collections.ConfigDict()  # Wav2Vec2Config fields over the named config
    m.decoder = ml_collections.ConfigDict()  # MBartConfig fields (defaults: mBART-50, 12 x 1024, 250,054 pieces)
    m.adaptor_layers = 3  # length adaptor: Conv1d (stride adaptor_stride) + GLU layers
    m.adaptor_kernel_size = 3
    m.adaptor_stride = 2
    m.adaptor_layer_norm = False  # fairseq's LayerNorm on the adaptor input
    m.adaptor_proj = False  # HF's projection to the decoder width (with a LayerNorm) before the convs
    m.joint_shared_layers = 0  # > 0: joint speech-text model, top encoder layers shared with the mBART text encoder
    return m


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by every experiment: fairseq's MuST-C multilingual recipe where it has one."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameter init, dropout and data order

    c.model = ml_collections.ConfigDict()
    c.model.family = "s2t"  # s2t (S2T Transformer on fbank) | xmef (wav2vec 2.0 + adaptor + mBART on waveforms)
    # | wav2vec2_ctc, mbart (model.xmef's encoder for ASR with CTC, its mBART on text: the XMEF miniature's
    # pretraining stages)
    c.model.dtype = "float32"  # compute dtype (float32 | bfloat16); parameters, gradients, Adam stay float32
    c.model.remat = False  # recompute every layer's activations in the backward pass (less memory, more compute)
    c.model.attention = "xla"  # auto | xla | cudnn: jax.nn.dot_product_attention's implementation (auto/cudnn: GPU)
    c.model.scan_layers = False  # nn.scan over identical layers (params stacked on a leading layer axis): faster
    # compiles of deep models. XMEF scans its wav2vec 2.0 and mBART stacks; S2T only under sharing.strategy
    # multilingual or bilingual (the other plans split single layers, which a stack of layers does not have)
    c.model.s2t = _s2t_model()  # model.family = s2t
    c.model.xmef = _xmef_model()  # model.family = xmef

    c.init = ml_collections.ConfigDict()  # where a fresh run's weights come from (none set: random init)
    c.init.run = ""  # a run (workdir) whose latest checkpoint this run continues from, re-laid out to its sharing plan
    c.init.reset_optimizer = False  # with init.run: start the optimizer state fresh instead of carrying it over
    c.init.schedule = "restart"  # with init.run: "restart" the learning-rate schedule at the source's step (optim.*
    # then describe the continuation: warmup to optim.lr, a cosine decays over the remaining updates) | "continue" it
    c.init.model = ""  # an HF SpeechEncoderDecoderModel directory (wav2vec 2.0 + adapter + mBART decoder)
    c.init.encoder = ""  # an HF Wav2Vec2Model / Wav2Vec2ForCTC directory or a fairseq wav2vec 2.0 checkpoint
    c.init.decoder = ""  # an HF MBartForConditionalGeneration directory holding sentencepiece.bpe.model
    c.init.trust_pickle = False  # unpickle a fairseq init.encoder fully (only files you trust)

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "mustc"  # mustc | covost2 | europarl_st | synthetic (MuST-C layout of `mlst data synth`)
    c.data.manual_dir = ""  # the extracted release (or the synthetic corpus root)
    c.data.data_dir = ""  # where the TFDS ArrayRecords are written / read
    c.data.src_lang = "en"  # S2T: the source language; XMEF: the pivot of x-en / en-x
    c.data.tgt_langs = MUSTC_LANGS  # S2T: one stream per target language; XMEF: targets of en-x
    c.data.src_langs = ()  # XMEF: sources of x-en
    c.data.directions = ""  # XMEF training directions: x-en, en-x, english-centric, m2m or "de-en,en-fr"
    c.data.eval_directions = ""  # XMEF directions scored on test_split ("": the training directions)
    c.data.lang_codes = ""  # XMEF: mBART-50 codes for languages mBART-50 lacks, e.g. "ca=es_XX,cy=fr_XX"
    c.data.train_split = "train"
    c.data.eval_split = "dev"  # dev loss and BLEU during training
    c.data.test_split = "tst-COMMON"  # `mlst evaluate` and the demo
    c.data.vocab = ""  # SentencePiece model (or HF tokenizer dir); S2T: trained on the targets when empty
    c.data.features = "audio"  # what the ArrayRecords store: audio (fbank on the fly) | fbank (S2T: computed once)
    c.data.max_frames = 3000  # longest training utterance, in feature steps (fbank frames; XMEF: samples)
    c.data.frame_buckets = ()  # batch lengths in feature steps (): the pipeline's default fbank buckets
    c.data.token_buckets = ()  # target lengths (): the pipeline's default
    c.data.max_frames_per_batch = 40000  # feature steps per batch and process (fairseq's --max-tokens)
    c.data.temperature = 1.0  # sampling over streams: p ~ n^(1/T)
    c.data.specaugment = "ld"  # fairseq SpecAugment policy on fbank ("": none; XMEF: none)
    c.data.cmvn = "utterance"  # utterance | global | "" (XMEF: utterance = wav2vec 2.0's waveform normalization)
    c.data.global_cmvn_path = ""  # data.cmvn = global: a GlobalCMVN .npz
    c.data.ctc_max_chars = 256  # with optim.ctc_weight > 0: longer transcripts get no CTC loss
    c.data.source_tokens = 64  # joint XMEF: longest transcript (MT source) in tokens; longer ones are dropped
    c.data.bitext = ""  # joint XMEF, mbart: a folder of extra parallel text, <src>-<tgt>.tsv (source TAB target)
    c.data.denoise_langs = ()  # mbart: languages with a denoising stream (their source texts, span-masked)

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adam"  # adam | adamw (the same: fairseq's Adam decays weights decoupled)
    c.optim.lr = 2e-3  # peak learning rate
    c.optim.betas = (0.9, 0.98)
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.schedule = "inverse_sqrt"  # inverse_sqrt | constant | cosine
    c.optim.warmup_updates = 10000
    c.optim.warmup_init_lr = 1e-7
    c.optim.min_lr = 0.0  # cosine: the learning rate reached at train.max_updates
    c.optim.clip_norm = 10.0  # 0: no clipping
    c.optim.grad_accum = 8  # fairseq's update_freq
    c.optim.label_smoothing = 0.1  # on target tokens; the language tag is never in the loss
    c.optim.ctc_weight = 0.0  # S2T: > 0 adds the auxiliary CTC loss on the encoder over the transcript
    c.optim.mt_weight = 1.0  # joint XMEF: weight of the MT loss (the ST loss has weight 1)

    c.train = ml_collections.ConfigDict()
    c.train.max_updates = 100000
    c.train.log_every = 100
    c.train.eval_every = 2000  # <= 0: no evaluation during training
    c.train.checkpoint_every = 2000
    c.train.keep_checkpoints = 10
    c.train.average_last = 10  # checkpoints averaged by `mlst evaluate` / `mlst average`
    c.train.progress = True  # progress bar on process 0
    c.train.peak_flops = 0.0  # summed peak FLOP/s of all devices, for MFU (0: not shown)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by the other axes
    c.mesh.fsdp = 1  # parameters and optimizer state sharded over this axis too
    c.mesh.tensor = 1  # heads, FFN units, vocabulary and conv channels sharded over this axis

    c.sharing = ml_collections.ConfigDict()
    c.sharing.strategy = "multilingual"  # see mlst_jax.sharing.strategies (XMEF: multilingual only)
    c.sharing.seed = 0  # random@X
    c.sharing.multiway_split = "dev"  # grad@X: the multi-way aligned split the task gradients are computed on
    c.sharing.multiway_max = 0  # utterances of it (0 = all)
    c.sharing.multiway_batch_size = 8  # rows per multi-way batch
    c.sharing.iterative_every = 0  # K > 0 (with grad@X): differentiate every K steps during training
    c.sharing.iterative_rounds = 4  # ... reaching X after this many rounds

    c.finetune = ml_collections.ConfigDict()
    c.finetune.trainable = "all"  # or an LNA variant / "adapters" (mlst_jax.finetune.lna); frozen params have no Adam state

    c.eval = ml_collections.ConfigDict()
    c.eval.beam = 5
    c.eval.lenpen = 1.0
    c.eval.max_len_a = 0.0  # hypotheses up to max_len_a * input length + max_len_b tokens
    c.eval.max_len_b = 200
    c.eval.batch_size = 0  # rows per eval batch (0: max_frames_per_batch // max_frames)
    c.eval.max_examples = 0  # per stream (0: all)

    c.demo = ml_collections.ConfigDict()  # the main job (mlst_jax/jobs/demo.py)
    c.demo.extra_steps = 0  # updates of every system continued from the shared model (0: a quarter of its updates)
    c.demo.lexicon = "full"  # the corpus's lexicon subset (mlst data synth --lexicon)
    c.demo.continue_lr = 0.0  # peak learning rate of the continued systems' restarted schedule (0: optim.lr)
    c.demo.continue_warmup = 0  # their warmup updates (0: a tenth of demo.extra_steps)
    return c


def resolve_mesh(c: ml_collections.ConfigDict, device_count: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) for `device_count` devices; `data=-1` takes what the other axes leave."""
    data, fsdp, tensor = c.mesh.data, c.mesh.fsdp, c.mesh.tensor
    for name, v in (("mesh.fsdp", fsdp), ("mesh.tensor", tensor)):
        if v < 1:
            raise ValueError(f"{name}={v} must be >= 1")
    if data == -1:
        if device_count % (fsdp * tensor):
            raise ValueError(f"mesh.fsdp × mesh.tensor = {fsdp * tensor} does not divide the {device_count} devices")
        data = device_count // (fsdp * tensor)
    if data * fsdp * tensor != device_count:
        raise ValueError(f"mesh data={data} × fsdp={fsdp} × tensor={tensor} = {data * fsdp * tensor} devices, "
                         f"but {device_count} are available")
    return data, fsdp, tensor


def validate(c: ml_collections.ConfigDict, device_count: int | None = None, check_paths: bool = True) -> None:
    """Raises ValueError naming the field for anything that would fail later (before any compilation)."""
    get_task(c).validate()  # the family's model, streams and combinations of fields
    if c.init.schedule not in ("restart", "continue"):
        raise ValueError(f"init.schedule={c.init.schedule!r}: restart or continue")
    langs = tuple(c.data.tgt_langs)
    unknown = [l for l in (c.data.src_lang, *langs, *c.data.src_langs) if l not in KNOWN_LANGS]
    if unknown:
        raise ValueError(f"data.tgt_langs / data.src_lang / data.src_langs: unknown language code(s) {unknown}")
    if len(set(langs)) != len(langs):
        raise ValueError(f"data.tgt_langs must be without repeats, got {list(langs)}")
    if c.data.features not in ("audio", "fbank"):
        raise ValueError(f"data.features={c.data.features!r} must be 'audio' or 'fbank'")
    if c.data.cmvn not in ("utterance", "global", ""):
        raise ValueError(f"data.cmvn={c.data.cmvn!r} must be 'utterance', 'global' or ''")
    if c.data.cmvn == "global" and not c.data.global_cmvn_path:
        raise ValueError("data.cmvn='global' needs data.global_cmvn_path (a GlobalCMVN .npz)")
    if check_paths:
        for field in ("manual_dir", "data_dir"):
            path = c.data[field]
            if not path:
                raise ValueError(f"data.{field} is not set (pass --config.data.{field}=DIR)")
            if field == "manual_dir" and not Path(path).is_dir():
                raise ValueError(f"data.manual_dir={path!r} does not exist")
    if c.model.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"model.dtype={c.model.dtype!r} must be 'float32' or 'bfloat16'")
    for field in ("lr", "clip_norm", "label_smoothing", "ctc_weight", "mt_weight", "min_lr"):
        if c.optim[field] < 0:
            raise ValueError(f"optim.{field}={c.optim[field]} must be >= 0")
    if not 0 <= c.optim.label_smoothing < 1:
        raise ValueError(f"optim.label_smoothing={c.optim.label_smoothing} must be in [0, 1)")
    if c.optim.grad_accum < 1:
        raise ValueError(f"optim.grad_accum={c.optim.grad_accum} must be >= 1")
    if c.optim.schedule == "cosine" and c.optim.warmup_updates >= c.train.max_updates:
        raise ValueError(f"optim.warmup_updates={c.optim.warmup_updates} must be below train.max_updates="
                         f"{c.train.max_updates} for the cosine schedule")
    for field in ("max_updates", "log_every", "checkpoint_every", "average_last"):
        if c.train[field] < 1:
            raise ValueError(f"train.{field}={c.train[field]} must be >= 1")
    if device_count is not None:
        resolve_mesh(c, device_count)


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config `FILE[:ARG]` with `--config.FIELD=VALUE` overrides (ml_collections `config_flags`), as `mlst train`
    and `python -m mlst_jax.main` read it; ValueError naming the file or field for a bad one."""
    path = spec.split(":", 1)[0]
    if not Path(path).is_file():
        raise ValueError(f"config file {path!r} does not exist")
    stray = [a for a in overrides if a.startswith("-") and not a.startswith("--config.")]
    if stray:
        raise ValueError(f"unrecognized arguments {stray}; config fields are overridden as --config.FIELD=VALUE")
    argv = ["mlst", f"--config={spec}", *overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "experiment config file", flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    try:
        fv(argv)
        config = fv["config"].value
    except (flags.Error, AttributeError, KeyError, TypeError) as e:  # bad overrides, get_config errors
        raise ValueError(f"--config {spec}: {_unknown_field(spec, overrides) or _last_line(str(e))}") from None
    if config is None:
        raise ValueError(f"{path}: get_config() returned None")
    return config


def _last_line(message: str) -> str:
    """The exception line of a message that embeds a traceback (config_flags wraps get_config errors so)."""
    if "Traceback (most recent call last)" not in message:
        return message
    last = [l for l in message.splitlines() if l.strip()][-1]
    return last.split(": ", 1)[1] if re.match(r"^\w+(Error|Exception): ", last) else last


def _unknown_field(spec: str, overrides: Sequence[str]) -> str | None:
    """"no config field X" for the first override naming a field the config does not have."""
    if not overrides:
        return None
    config = load_config(spec)
    for arg in overrides:
        if not arg.startswith("--config."):
            continue
        node, name = config, arg[len("--config."):].split("=", 1)[0]
        for part in name.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                return f"no config field {name!r} ({arg})"
            node = node[part]
    return None
