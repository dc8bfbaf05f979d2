"""`Translator`: the public inference API (inputs → logits, inputs → token ids, audio → text) of the S2T
Transformer and of XMEF (wav2vec 2.0 → length adaptor → mBART decoder), one class over a small model-family
abstraction (`_Family`): what differs is the model input (fbank features vs raw 16 kHz waveforms), its padding
bucket, the audio front end and how a target language becomes the forced first token."""
from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from mlst_jax.audio import fbank, utterance_cmvn
from mlst_jax.audio.cmvn import normalize_waveform
from mlst_jax.audio.fbank import bucket_length
from mlst_jax.audio.io import SAMPLE_RATE
from mlst_jax.convert import load_translation_model
from mlst_jax.convert.vocab_files import load_vocab
from mlst_jax.convert.xmef import (
    load_mbart50_vocab,
    mbart50_lang_id_checked,
    mbart50_vocab_size,
    waveform_normalization,
)
from mlst_jax.data.vocab import HF_VOCAB, Vocab
from mlst_jax.decode import beam_search
from mlst_jax.models import s2t_transformer
from mlst_jax.models import xmef as xmef_model
from mlst_jax.models.joint import JointConfig, JointXMEF
from mlst_jax.models.params import unstack_layers
from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.models.xmef import XMEF, XMEFConfig

log = logging.getLogger(__name__)

MODEL_FILE = "mlst_model.json"
PARAMS_FILE = "params.safetensors"
FRAME_BUCKET = 128  # feature lengths are padded to a multiple of this to bound recompiles


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def _batch_bucket(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


class _Family:
    """What one model family needs from `Translator`. Subclasses are stateless singletons (`_FAMILIES`)."""

    architecture: str  # the `architecture` in mlst_model.json
    module: type  # flax module with `__call__` (logits), `encode`, `precompute_cross_kv`, `decode_step`
    config_cls: type
    init_cache = None  # (config, batch, max_len, dtype) -> decoder KV cache
    no_vocab = "this model has no vocabulary to turn ids into text; use generate()"

    def per_layer(self, config):
        """`config` without `scan_layers`: decoding runs on per-layer parameters (the KV cache is per layer)."""
        return config.replace(scan_layers=False)

    def min_length(self, config) -> int:
        raise NotImplementedError

    def bucket(self, n: int) -> int:
        """Padded input length for a longest input of n steps (bounds recompiles)."""
        raise NotImplementedError

    def check_shape(self, x: np.ndarray, config) -> None:
        """ValueError unless x is [batch, length, ...] as the model takes it."""
        raise NotImplementedError

    def check_lengths(self, lens: np.ndarray, n_steps: int, config) -> None:
        raise NotImplementedError

    def audio_input(self, waveform: np.ndarray, sample_rate: int, cmvn: str, config) -> np.ndarray:
        """One checked float32 waveform (`_waveform`) → the model's input for it (with this family's checks)."""
        raise NotImplementedError

    def lang_id_without_vocab(self, config, tgt_lang: str) -> int:
        raise ValueError(f"unknown target language {tgt_lang!r}: this model has no vocabulary; pass the tag id")

    def load_vocab(self, path: Path, kind: str):
        """The vocabulary beside a pretrained checkpoint (not an exported directory), or None."""
        raise NotImplementedError


class _S2TFamily(_Family):
    """S2T Transformer: input [B, frames, 80] Kaldi fbank (+ utterance CMVN), `<lang:xx>` tags of a `Vocab`."""

    architecture, module, config_cls = "s2t_transformer", S2TTransformer, S2TConfig
    init_cache = staticmethod(s2t_transformer.init_decode_cache)

    def min_length(self, config):
        return 1

    def bucket(self, n):
        return _round_up(n, FRAME_BUCKET)

    def check_shape(self, x, config):
        want = config.input_feat_per_channel * config.input_channels
        if x.ndim != 3 or x.shape[-1] != want:
            raise ValueError(f"features must be [batch, frames, {want}], got shape {x.shape}")

    def check_lengths(self, lens, n_steps, config):
        if (lens < 1).any() or (lens > n_steps).any():
            raise ValueError(f"feature_lengths must be in [1, {n_steps}], got {lens.tolist()}")

    def audio_input(self, waveform, sample_rate, cmvn, config):
        feats = fbank(np.asarray(waveform), sample_rate)
        return utterance_cmvn(feats) if cmvn == "utterance" else feats

    def load_vocab(self, path, kind):
        return load_vocab(path, kind)


class _XMEFFamily(_Family):
    """XMEF: input [B, samples] raw 16 kHz waveforms (zero mean / unit variance per utterance when
    cmvn='utterance', HF's `do_normalize`); the target language is an mBART-50 code (`MBart50Vocab`) or a
    `<lang:xx>` tag when the model carries a `Vocab` (the miniature XMEF)."""

    architecture, module, config_cls = "xmef", XMEF, XMEFConfig
    init_cache = staticmethod(xmef_model.init_decode_cache)
    no_vocab = ("this XMEF model has no tokenizer to turn ids into text (an HF directory needs the "
                "sentencepiece.bpe.model that MBart50Tokenizer saves); use generate() for token ids")

    def per_layer(self, config):
        return config.replace(encoder=config.encoder.replace(scan_layers=False),
                              decoder=config.decoder.replace(scan_layers=False))

    def min_length(self, config):
        return config.encoder.min_num_samples

    def bucket(self, n):
        return bucket_length(n)  # >= 1 s, then geometric steps of 2 ** 0.25

    def check_shape(self, x, config):
        if x.ndim != 2:
            raise ValueError(f"XMEF inputs must be waveforms [batch, samples], got shape {x.shape}")

    def check_lengths(self, lens, n_steps, config):
        lo = self.min_length(config)
        if (lens < lo).any() or (lens > n_steps).any():
            raise ValueError(f"waveform lengths must be in [{lo}, {n_steps}] samples (the encoder needs at least "
                             f"{lo}), got {lens.tolist()}")

    def audio_input(self, w, sample_rate, cmvn, config):
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"XMEF needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz; resample first "
                             f"(e.g. load_audio(path, target_sr={SAMPLE_RATE}) or librosa.resample)")
        if w.size < self.min_length(config):
            raise ValueError(f"waveform too short: {w.size} samples, the encoder needs at least "
                             f"{self.min_length(config)}")
        if cmvn == "utterance":
            w = normalize_waveform(w)
        return w

    def lang_id_without_vocab(self, config, tgt_lang):
        sp_size = config.vocab_size - mbart50_vocab_size(0)
        if sp_size < 3:
            raise ValueError(f"target language {tgt_lang!r}: this model has no tokenizer and its vocabulary "
                             f"({config.vocab_size}) is too small for mBART-50's layout; pass the code's id")
        return mbart50_lang_id_checked(tgt_lang, sp_size)

    def load_vocab(self, path, kind):
        vocab = load_mbart50_vocab(path)
        if vocab is None:
            log.warning("no sentencepiece.bpe.model in %s: generate() works (languages by mBART-50's layout), "
                        "translate() is unavailable", path)
        return vocab


class _JointFamily(_XMEFFamily):
    """The joint speech-text XMEF (`mlst_jax.models.joint`): speech in as XMEF; its text path (the mBART encoder
    with the shared layers) also translates source text (`translate_text`)."""

    architecture, module, config_cls = "xmef_joint", JointXMEF, JointConfig

    def per_layer(self, config):
        return JointConfig(super().per_layer(config.xmef), config.shared_layers)


_FAMILIES = {f.architecture: f for f in (_S2TFamily(), _XMEFFamily(), _JointFamily())}


def _waveform(waveform) -> np.ndarray:
    """A 1-D, non-empty, finite float32 waveform (signed integer PCM scaled by its full range); ValueError else."""
    w = np.asarray(waveform)
    if w.ndim != 1:
        raise ValueError(f"expected a 1-D mono waveform, got shape {w.shape}; down-mix multi-channel audio first")
    if w.size == 0:
        raise ValueError("got an empty waveform (0 samples)")
    if np.issubdtype(w.dtype, np.signedinteger):
        w = w / float(np.iinfo(w.dtype).max + 1)
    w = w.astype(np.float32)
    if not np.isfinite(w).all():
        raise ValueError(f"got a waveform with {int(np.count_nonzero(~np.isfinite(w)))} non-finite (NaN/inf) "
                         "samples")
    return w


def _number(x) -> str:
    return np.format_float_positional(float(x), precision=6, trim="0")


def _level(w: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(the waveform to translate, a warning or None): a constant waveform is silence and is translated as it is;
    one with samples beyond [-1, 1] is scaled to peak 1.0 (a gain change, which utterance normalization undoes
    anyway, so that models with cmvn='none' see the level they were trained on)."""
    lo, hi = w.min(), w.max()
    if lo == hi:
        return w, f"silence (all {w.size} samples are {_number(lo)}); translated as it is"
    peak = max(-lo, hi)
    if peak > 1.0:
        return w / peak, f"clipping or unnormalized float input (peak {_number(peak)}); scaled to peak 1.0"
    return w, None


def _family_of(config) -> _Family:
    for family in _FAMILIES.values():
        if isinstance(config, family.config_cls):
            return family
    raise TypeError(f"Translator serves S2TConfig, XMEFConfig and JointConfig models, got {type(config).__name__}")


class Translator:
    """A loaded S2T Transformer or XMEF model with its vocabulary and input normalization.

    `from_pretrained` accepts an HF Speech2Text directory, a fairseq S2T checkpoint, an HF SpeechEncoderDecoderModel
    directory (wav2vec 2.0 + mBART: XMEF), or a directory written by `Translator.save`. The model family follows
    from the config (`S2TConfig` or `XMEFConfig`). `cmvn`: 'utterance' normalizes each input in `translate`
    (S2T: utterance CMVN of the fbank; XMEF: zero mean / unit variance of the waveform, HF's `do_normalize`),
    'none' leaves it as is. Inputs are padded to bucketed shapes so that repeated calls reuse compiled code.
    `langs`: the target languages the model serves (an export of one language's parameters of a run with
    language-specific parameters); None: every language of its vocabulary. `path`: the directory or file it was
    loaded from (None when built in memory). A model trained with `scan_layers` is served (and saved) with its layers
    unstacked: the same weights, one module per layer.
    """

    def __init__(self, config: S2TConfig | XMEFConfig, params, vocab=None, cmvn: str = "utterance",
                 langs=None):
        if cmvn not in ("utterance", "none"):
            raise ValueError(f"cmvn must be 'utterance' or 'none', got {cmvn!r}")
        self.family = _family_of(config)
        self.config, self.vocab, self.cmvn = self.family.per_layer(config), vocab, cmvn
        self.params = jax.tree.map(jnp.asarray, unstack_layers(params))
        self.model = self.family.module(self.config)
        self.path: Path | None = None
        if vocab is not None and len(vocab) != config.vocab_size:
            raise ValueError(f"vocabulary has {len(vocab)} pieces but the model's vocab_size is {config.vocab_size}")
        self.langs = langs

    @property
    def langs(self) -> tuple[str, ...] | None:
        return self._langs

    @langs.setter
    def langs(self, langs) -> None:
        if langs is not None:
            langs = tuple(langs)
            if not langs:
                raise ValueError("langs must name at least one language (None: every language)")
            for lang in langs:
                self._tag_id(lang)  # ValueError for a language the model has no tag for
        self._langs = langs

    # -- loading and saving --------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path, trust_pickle: bool = False) -> "Translator":
        """Loads an HF dir (Speech2Text, or SpeechEncoderDecoderModel = XMEF), a fairseq S2T checkpoint (file or
        dir) or one of our exported model dirs.

        fairseq checkpoints are read with torch's weights-only unpickler; `trust_pickle=True` unpickles them
        fully (needed for fairseq >= 0.10, which stores its config as an omegaconf object): only for files you
        trust.
        """
        path = Path(path)
        if (path / MODEL_FILE).is_file():
            translator = cls._load_own(path)
        elif exports := sorted(p.parent.name for p in path.glob(f"*/{MODEL_FILE}")):
            raise ValueError(f"{path} is not a model but holds exported models ({', '.join(exports)}): pass the one "
                             f"that serves the target language, e.g. {path / exports[0]}")
        else:
            model, kind, config, params = load_translation_model(path, trust_pickle=trust_pickle)
            cmvn = "utterance"
            if model == "xmef":
                cmvn = waveform_normalization(path)
            translator = cls(config, params, _family_of(config).load_vocab(path, kind), cmvn)
        translator.path = path
        return translator

    @classmethod
    def _load_own(cls, path: Path) -> "Translator":
        meta = json.loads((path / MODEL_FILE).read_text())
        family = _FAMILIES.get(meta.get("architecture"))
        if family is None:
            raise ValueError(f"{path / MODEL_FILE}: unsupported architecture {meta.get('architecture')!r}; "
                             f"known: {sorted(_FAMILIES)}")
        if (path / HF_VOCAB).is_file():
            vocab = Vocab.from_hf_dir(path)
        else:  # an XMEF model's mBART-50 SentencePiece model alone
            vocab = load_mbart50_vocab(path) if isinstance(family, _XMEFFamily) else None
        params = traverse_util.unflatten_dict(load_file(str(path / PARAMS_FILE)), sep="/")
        return cls(family.config_cls.from_dict(meta["config"]), params, vocab, meta.get("cmvn", "utterance"),
                   meta.get("langs"))

    def save(self, path: str | Path) -> None:
        """Writes `mlst_model.json` (architecture, config, cmvn, langs), `params.safetensors` and the vocabulary
        files (`vocab.json` + `sentencepiece.bpe.model`, or for an mBART-50 vocabulary `sentencepiece.bpe.model`
        alone)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"architecture": self.family.architecture, "config": self.config.to_dict(), "cmvn": self.cmvn,
                "langs": None if self.langs is None else list(self.langs)}
        (path / MODEL_FILE).write_text(json.dumps(meta, indent=1))
        flat = traverse_util.flatten_dict(self.params, sep="/")
        save_file({k: np.asarray(v) for k, v in flat.items()}, str(path / PARAMS_FILE))
        if self.vocab is not None:
            self.vocab.save(path)

    # -- input checks and padding --------------------------------------------------------------------

    def _pad_features(self, features, feature_lengths):
        fam, cfg = self.family, self.config
        feats = np.asarray(features, np.float32)
        lens = np.asarray(feature_lengths, np.int32).reshape(-1)
        fam.check_shape(feats, cfg)
        if lens.shape[0] != feats.shape[0]:
            raise ValueError(f"{lens.shape[0]} feature_lengths for a batch of {feats.shape[0]}")
        fam.check_lengths(lens, feats.shape[1], cfg)
        if not np.isfinite(feats).all():
            raise ValueError("features contain NaN or inf")
        b, t = _batch_bucket(feats.shape[0]), fam.bucket(int(lens.max()))
        out = np.zeros((b, t, *feats.shape[2:]), np.float32)
        out[: feats.shape[0], : min(t, feats.shape[1])] = feats[:, :t]
        out_lens = np.full((b,), fam.min_length(cfg), np.int32)  # dummy rows: the shortest valid input
        out_lens[: lens.shape[0]] = lens
        return out, out_lens, feats.shape[0]

    def _check_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.config.vocab_size)]
            raise ValueError(f"token ids out of range [0, {self.config.vocab_size}): {sorted(set(bad.tolist()))[:10]}")

    def lang_id(self, tgt_lang: str | int) -> int:
        """Id of the token forced first for `tgt_lang`: an S2T `<lang:xx>` tag or an XMEF mBART-50 language code
        ('de' or 'de_DE'; without a tokenizer placed by mBART-50's vocabulary layout), or `tgt_lang` itself when it
        is an id. ValueError when the model does not serve that language (`langs`), naming the exported model
        beside it that does."""
        tag = self._tag_id(tgt_lang)
        if self.langs is not None and not self._serves(self.langs, tag):
            where = "this model" if self.path is None else str(self.path)
            wanted = tgt_lang if isinstance(tgt_lang, str) else f"token id {tgt_lang}"
            served = f"{where} serves {', '.join(self.langs)} only"
            others = self._exports_serving(tag)
            raise ValueError(f"{served}; translate into {wanted} with {' or '.join(others)}" if others
                             else f"{served}, not {wanted}")
        return tag

    def _tag_id(self, tgt_lang: str | int) -> int:
        if isinstance(tgt_lang, (int, np.integer)):
            self._check_ids(np.asarray([tgt_lang]))
            return int(tgt_lang)
        if self.vocab is None:
            return self.family.lang_id_without_vocab(self.config, tgt_lang)
        return self.vocab.lang_id(tgt_lang)

    def _serves(self, langs, tag: int) -> bool:
        """Whether one of `langs` has the tag `tag` (so 'de' and 'de_DE' name the same mBART-50 language)."""
        for lang in langs:
            try:
                if self._tag_id(lang) == tag:
                    return True
            except ValueError:
                pass
        return False

    def _exports_serving(self, tag: int) -> list[str]:
        """The exported models beside `path` (the other `out/<lang>` of `mlst average`) that serve `tag`."""
        if self.path is None:
            return []
        here = self.path if self.path.name else self.path.resolve()  # '.' has no parent to search
        found = []
        for meta_file in sorted(here.parent.glob(f"*/{MODEL_FILE}")):
            if meta_file.parent.name == here.name:
                continue
            try:
                langs = json.loads(meta_file.read_text()).get("langs")
            except (OSError, ValueError):
                continue
            if langs and self._serves(langs, tag):
                found.append(str(here.parent / meta_file.parent.name))
        return found

    # -- inference -----------------------------------------------------------------------------------

    def logits(self, features, feature_lengths, decoder_input_ids) -> np.ndarray:
        """Teacher-forced logits [B, T, V] (fp32) for decoder inputs [B, T] right-padded with the pad id.

        `features`/`feature_lengths`: S2T: fbank [B, frames, 80] and frame counts; XMEF: waveforms [B, samples]
        and sample counts (fed as they are: normalize them first when the model expects it)."""
        ids = np.asarray(decoder_input_ids, np.int32)
        if ids.ndim != 2 or ids.shape[0] != np.asarray(feature_lengths).reshape(-1).shape[0]:
            raise ValueError(f"decoder_input_ids must be [batch, length] matching the features, got {ids.shape}")
        self._check_ids(ids)
        feats, lens, n = self._pad_features(features, feature_lengths)
        padded = np.full((feats.shape[0], ids.shape[1]), self.config.pad_token_id, np.int32)
        padded[:n] = ids
        return np.asarray(_logits_fn(self.model)(self.params, feats, lens, padded))[:n]

    def generate(self, features, feature_lengths, tgt_lang, beam_size: int = 5, length_penalty: float = 1.0,
                 max_len_a: float = 0.0, max_len_b: int = 200, n_best: int = 1, convention: str = "fairseq"):
        """Beam search with the target-language tag forced first; returns the best hypothesis per input as ids
        (tag included, `</s>` excluded), or the `n_best` list of them per input when n_best > 1.

        `convention="hf"` reproduces HF `generate(num_beams, forced_bos_token_id=tag, early_stopping=True,
        max_new_tokens=max_len_b + 1)` exactly; see docs/api.md for the differences from fairseq's.
        """
        if convention not in ("fairseq", "hf"):
            raise ValueError(f"convention must be 'fairseq' or 'hf', got {convention!r}")
        if beam_size < 1 or not 1 <= n_best <= beam_size:
            raise ValueError(f"need beam_size >= 1 and 1 <= n_best <= beam_size, got {beam_size}, {n_best}")
        feats, lens, n = self._pad_features(features, feature_lengths)
        tag = self.lang_id(tgt_lang)
        cap = self.config.max_target_positions - 1
        # fairseq: up to max_len_a * input length (frames; XMEF: samples) + max_len_b tokens, then EOS.
        max_len = np.minimum(np.floor(max_len_a * lens + max_len_b).astype(np.int32) + 1, cap)
        if (max_len < 2).any():
            raise ValueError(f"max_len_a * frames + max_len_b must allow at least one token, got {max_len - 1}")
        max_steps = min(_round_up(int(max_len[:n].max()), 16), cap)
        fn = _generate_fn(self.model, self.family.init_cache, beam_size, n_best, max_steps, convention == "hf")
        out = fn(self.params, feats, lens, np.full((feats.shape[0], 1), tag, np.int32), max_len,
                 np.float32(length_penalty))
        tokens = np.asarray(out.tokens)[:n]
        hyps = [[_strip(row, self.config.eos_token_id, self.config.pad_token_id) for row in sent] for sent in tokens]
        return [h[0] for h in hyps] if n_best == 1 else hyps

    def generate_from_text(self, src_ids, tgt_lang, beam_size: int = 5, length_penalty: float = 1.0,
                           max_len_a: float = 0.0, max_len_b: int = 200) -> list[list[int]]:
        """Beam search from source token ids [B, S] (`[source code, pieces..., </s>]` right-padded with the pad id)
        through a joint model's text path; the best hypothesis per row (tag included, `</s>` excluded)."""
        if not hasattr(self.model, "encode_text"):
            raise ValueError(f"{type(self.model).__name__} has no text input; only the joint speech-text model does")
        ids = np.asarray(src_ids, np.int32)
        if ids.ndim != 2:
            raise ValueError(f"src_ids must be [batch, length], got shape {ids.shape}")
        self._check_ids(ids)
        pad = self.config.pad_token_id
        lens = (ids != pad).sum(-1).astype(np.int32)
        b, t = _batch_bucket(ids.shape[0]), _round_up(int(lens.max()), 16)
        src = np.full((b, t), pad, np.int32)
        src[: ids.shape[0], : min(t, ids.shape[1])] = ids[:, :t]
        src[ids.shape[0]:, 0] = self.config.eos_token_id  # dummy rows: one token
        tag = self.lang_id(tgt_lang)
        cap = self.config.max_target_positions - 1
        max_len = np.minimum(np.floor(max_len_a * np.maximum((src != pad).sum(-1), 1) + max_len_b).astype(np.int32)
                             + 1, cap)
        max_steps = min(_round_up(int(max_len[: ids.shape[0]].max()), 16), cap)
        fn = _generate_fn(self.model, self.family.init_cache, beam_size, 1, max_steps, False, text=True)
        out = fn(self.params, src, np.zeros((b,), np.int32), np.full((b, 1), tag, np.int32), max_len,
                 np.float32(length_penalty))
        tokens = np.asarray(out.tokens)[: ids.shape[0], 0]
        return [_strip(row, self.config.eos_token_id, pad) for row in tokens]

    def translate_text(self, texts, src_lang: str, tgt_lang: str, **generate_kw) -> list[str]:
        """Source sentences of `src_lang` → detokenized translations through a joint model's text path."""
        if self.vocab is None:
            raise ValueError(self.family.no_vocab)
        rows = [self.vocab.encode(t, src_lang) for t in texts]
        ids = np.full((len(rows), max(map(len, rows))), self.config.pad_token_id, np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return [self.vocab.decode(h) for h in self.generate_from_text(ids, tgt_lang, **generate_kw)]

    def translate(self, waveforms, sample_rate: int, tgt_lang: str, names=None, **generate_kw) -> list[str]:
        """Waveforms (a list of 1-D float arrays in [-1, 1]) → detokenized translations. S2T: fbank (+ CMVN);
        XMEF: the 16 kHz waveforms themselves (normalized when cmvn='utterance'). `generate_kw` go to `generate`.

        `names` (e.g. file names; default `waveforms[i]`) name each input in its errors and warnings. A constant
        waveform (silence) is translated as it is, with a warning; one with samples beyond [-1, 1] is scaled to
        peak 1.0, with a warning."""
        if self.vocab is None:
            raise ValueError(self.family.no_vocab)
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            waveforms = [waveforms]
        names = [f"waveforms[{i}]" for i in range(len(waveforms))] if names is None else list(names)
        if len(names) != len(waveforms):
            raise ValueError(f"{len(names)} names for {len(waveforms)} waveforms")
        self.lang_id(tgt_lang)  # an unknown or unserved language fails before any audio is processed
        inputs = [self._audio_input(w, sample_rate, name) for w, name in zip(waveforms, names)]
        lens = np.array([len(x) for x in inputs], np.int32)
        batch = np.zeros((len(inputs), lens.max(), *inputs[0].shape[1:]), np.float32)
        for i, x in enumerate(inputs):
            batch[i, : len(x)] = x
        return [self.vocab.decode(ids) for ids in self.generate(batch, lens, tgt_lang, **generate_kw)]

    def _audio_input(self, waveform, sample_rate: int, name: str) -> np.ndarray:
        """One waveform → the model's input; its errors and level warnings (`_level`) name it."""
        try:
            w, warning = _level(_waveform(waveform))
            x = self.family.audio_input(w, sample_rate, self.cmvn, self.config)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        if warning:
            log.warning("%s: %s", name, warning)
        return x


def _strip(row: np.ndarray, eos: int, pad: int) -> list[int]:
    row = row.tolist()
    if eos in row:
        row = row[: row.index(eos)]
    return [t for t in row if t != pad]


@functools.lru_cache(maxsize=None)
def _logits_fn(model):
    return jax.jit(lambda params, f, l, t: model.apply({"params": params}, f, l, t))


@functools.lru_cache(maxsize=None)
def _generate_fn(model, init_cache, beam_size: int, n_best: int, max_steps: int, hf_compat: bool,
                 text: bool = False):
    """Jitted encode → cross-attention K/V → `mlst_jax.decode.beam_search` for every model family (`text`: from
    source token ids through a joint model's text encoder; `lens` is then unused)."""
    cfg, cls = model.config, type(model)

    def run(params, feats, lens, prefix, max_len, length_penalty):
        variables = {"params": params}
        if text:
            enc_out, enc_valid = model.apply(variables, feats, method=cls.encode_text)
        else:
            enc_out, enc_valid = model.apply(variables, feats, lens, method=cls.encode)
        cross_kv = model.apply(variables, enc_out, method=cls.precompute_cross_kv)
        cache = init_cache(cfg, feats.shape[0] * beam_size, max_steps + 1, enc_out.dtype)

        def step_fn(tokens, cache, step):
            return model.apply(variables, tokens, cache, step, cross_kv, enc_valid, method=cls.decode_step)

        return beam_search(step_fn, cache, batch_size=feats.shape[0], beam_size=beam_size, max_len=max_len,
                           decoder_start_id=cfg.decoder_start_token_id, eos_id=cfg.eos_token_id,
                           pad_id=cfg.pad_token_id, prefix=prefix, length_penalty=length_penalty, n_best=n_best,
                           max_steps=max_steps, hf_compat=hf_compat)

    return jax.jit(run)
