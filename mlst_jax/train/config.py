"""Experiment configs: the shared defaults every `configs/*.py` starts from, and validation before compiling."""
from __future__ import annotations

from pathlib import Path

import ml_collections

from mlst_jax.models.s2t_transformer import NAMED_CONFIGS, S2TConfig, named_config
from mlst_jax.sharing.strategies import parse_strategy

MUSTC_LANGS = ("de", "es", "fr", "it", "nl", "pt", "ro", "ru")
KNOWN_LANGS = frozenset(MUSTC_LANGS + ("en", "ca", "fa", "et", "mn", "tr", "ar", "sv", "lv", "sl", "ta", "ja", "id",
                                       "cy", "zh", "pl", "cs", "el", "hu", "fi", "sk", "bg", "lt", "mt", "hr", "da",
                                       "ko", "vi", "uk", "he", "hi"))


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by every experiment: fairseq's MuST-C multilingual recipe where it has one."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.arch = "s2t_transformer_m"
    c.model.overrides = ml_collections.ConfigDict()  # S2TConfig fields, e.g. {"dropout": 0.1}
    c.model.vocab_size = 10000
    c.model.tie_word_embeddings = False
    c.model.dtype = "float32"  # compute dtype; parameters stay float32

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "mustc"  # mustc | covost2 | europarl_st | synthetic
    c.data.manual_dir = ""  # the extracted release (or the synthetic corpus root)
    c.data.data_dir = ""  # where the TFDS ArrayRecords are written / read
    c.data.src_lang = "en"
    c.data.tgt_langs = MUSTC_LANGS
    c.data.train_split = "train"
    c.data.eval_split = "dev"
    c.data.test_split = "tst-COMMON"
    c.data.vocab = ""  # SentencePiece model prefix; trained on the targets when empty
    c.data.features = "audio"  # what the ArrayRecords store: audio (fbank on the fly) | fbank (computed once)
    c.data.max_frames = 3000
    c.data.max_frames_per_batch = 40000
    c.data.temperature = 1.0
    c.data.specaugment = "ld"
    c.data.cmvn = "utterance"
    c.data.ctc_max_chars = 256  # with optim.ctc_weight > 0: longer transcripts get no CTC loss

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adam"
    c.optim.lr = 2e-3
    c.optim.betas = (0.9, 0.98)
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.schedule = "inverse_sqrt"
    c.optim.warmup_updates = 10000
    c.optim.warmup_init_lr = 1e-7
    c.optim.clip_norm = 10.0
    c.optim.grad_accum = 8  # fairseq's update_freq
    c.optim.label_smoothing = 0.1
    c.optim.ctc_weight = 0.0  # > 0: auxiliary CTC loss on the encoder over the transcript (mlst_jax.train.ctc)

    c.train = ml_collections.ConfigDict()
    c.train.max_updates = 100000
    c.train.log_every = 100
    c.train.eval_every = 2000  # <= 0: no evaluation during training
    c.train.checkpoint_every = 2000
    c.train.keep_checkpoints = 10
    c.train.average_last = 10
    c.train.progress = True  # progress bar on process 0
    c.train.peak_flops = 0.0  # summed peak FLOP/s of all devices, for MFU (0: not shown)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.sharing = ml_collections.ConfigDict()
    c.sharing.strategy = "multilingual"  # see mlst_jax.sharing.strategies
    c.sharing.init = ""  # a run (workdir) whose latest checkpoint this run continues from, re-laid out to its plan
    c.sharing.seed = 0  # random@X
    c.sharing.multiway_split = "dev"  # grad@X: the multi-way aligned split the task gradients are computed on
    c.sharing.multiway_max = 0  # utterances of it (0 = all)
    c.sharing.iterative_every = 0  # K > 0 (with grad@X): differentiate every K steps during training
    c.sharing.iterative_rounds = 4  # ... reaching X after this many rounds
    c.sharing.reset_optimizer = False  # with init: start the optimizer state fresh instead of carrying it over

    c.finetune = ml_collections.ConfigDict()
    c.finetune.trainable = "all"  # or an LNA variant / "adapters" (mlst_jax.finetune.lna); frozen params have no Adam state

    c.eval = ml_collections.ConfigDict()
    c.eval.beam = 5
    c.eval.lenpen = 1.0
    c.eval.max_len_a = 0.0
    c.eval.max_len_b = 200
    c.eval.batch_size = 0  # rows per eval batch (0: max_frames_per_batch // max_frames)
    c.eval.max_examples = 0  # per language (0: all)
    return c


def model_config(c: ml_collections.ConfigDict) -> S2TConfig:
    """The S2TConfig an experiment config describes."""
    from mlst_jax.data.ctc_labels import VOCAB_SIZE

    ctc = VOCAB_SIZE if c.optim.get("ctc_weight", 0.0) > 0 else 0
    return named_config(c.model.arch, vocab_size=c.model.vocab_size, tie_word_embeddings=c.model.tie_word_embeddings,
                        dtype=c.model.dtype, ctc_vocab_size=ctc, **c.model.overrides.to_dict())


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
    if c.model.arch not in NAMED_CONFIGS:
        raise ValueError(f"model.arch={c.model.arch!r} is not one of {sorted(NAMED_CONFIGS)}")
    model_config(c)  # field errors from S2TConfig name the field
    langs = tuple(c.data.tgt_langs)
    unknown = [l for l in (c.data.src_lang, *langs) if l not in KNOWN_LANGS]
    if unknown:
        raise ValueError(f"data.tgt_langs / data.src_lang: unknown language code(s) {unknown}")
    if not langs or len(set(langs)) != len(langs):
        raise ValueError(f"data.tgt_langs must be non-empty and without repeats, got {list(langs)}")
    if c.data.get("features", "audio") not in ("audio", "fbank"):
        raise ValueError(f"data.features={c.data.features!r} must be 'audio' or 'fbank'")
    if check_paths:
        for field in ("manual_dir", "data_dir"):
            path = c.data[field]
            if not path:
                raise ValueError(f"data.{field} is not set (pass --config.data.{field}=DIR)")
            if field == "manual_dir" and not Path(path).is_dir():
                raise ValueError(f"data.manual_dir={path!r} does not exist")
    try:
        parse_strategy(c.sharing.strategy)
    except ValueError as e:
        raise ValueError(f"sharing.strategy: {e}") from None
    for field in ("lr", "clip_norm", "label_smoothing", "ctc_weight"):
        if c.optim.get(field, 0.0) < 0:
            raise ValueError(f"optim.{field}={c.optim[field]} must be >= 0")
    if c.optim.grad_accum < 1:
        raise ValueError(f"optim.grad_accum={c.optim.grad_accum} must be >= 1")
    if c.optim.get("schedule") == "cosine" and c.optim.get("warmup_updates", 0) >= c.train.max_updates:
        raise ValueError(f"optim.warmup_updates={c.optim.warmup_updates} must be below train.max_updates="
                         f"{c.train.max_updates} for the cosine schedule")
    if device_count is not None:
        resolve_mesh(c, device_count)

