"""`Translator`: the public inference API (features → logits, features → token ids, audio → text)."""
from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer, init_decode_cache

log = logging.getLogger(__name__)

MODEL_FILE = "mlst_model.json"
PARAMS_FILE = "params.safetensors"
FRAME_BUCKET = 128  # feature lengths are padded to a multiple of this to bound recompiles


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def _batch_bucket(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


class Translator:
    """A loaded S2T model with its vocabulary and feature normalization.

    `from_pretrained` accepts an HF Speech2Text directory, a fairseq S2T checkpoint, or a directory written by
    `Translator.save`. Inputs are padded to bucketed shapes so that repeated calls reuse compiled code.
    """

    def __init__(self, config: S2TConfig, params, vocab=None, cmvn: str = "utterance"):
        if cmvn not in ("utterance", "none"):
            raise ValueError(f"cmvn must be 'utterance' or 'none', got {cmvn!r}")
        self.config, self.vocab, self.cmvn = config, vocab, cmvn
        self.params = jax.tree.map(jnp.asarray, params)
        self.model = S2TTransformer(config)
        if vocab is not None and len(vocab) != config.vocab_size:
            raise ValueError(f"vocabulary has {len(vocab)} pieces but the model's vocab_size is {config.vocab_size}")

    # -- loading and saving --------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path, trust_pickle: bool = False) -> "Translator":
        """Loads an HF dir, a fairseq checkpoint (file or dir) or one of our exported model dirs.

        fairseq checkpoints are read with torch's weights-only unpickler; `trust_pickle=True` unpickles them
        fully (needed for fairseq >= 0.10, which stores its config as an omegaconf object): only for files you
        trust.
        """
        from mlst_jax.convert import load_checkpoint
        from mlst_jax.convert.vocab_files import load_vocab

        path = Path(path)
        if (path / MODEL_FILE).is_file():
            return cls._load_own(path)
        kind, config, params = load_checkpoint(path, trust_pickle=trust_pickle)
        return cls(config, params, load_vocab(path, kind))

    @classmethod
    def _load_own(cls, path: Path) -> "Translator":
        from safetensors.numpy import load_file

        from mlst_jax.data.vocab import Vocab

        meta = json.loads((path / MODEL_FILE).read_text())
        if meta.get("architecture") != "s2t_transformer":
            raise ValueError(f"{path / MODEL_FILE}: unsupported architecture {meta.get('architecture')!r}")
        vocab = Vocab.from_hf_dir(path) if (path / "vocab.json").is_file() else None
        params = traverse_util.unflatten_dict(load_file(str(path / PARAMS_FILE)), sep="/")
        return cls(S2TConfig.from_dict(meta["config"]), params, vocab, meta.get("cmvn", "utterance"))

    def save(self, path: str | Path) -> None:
        """Writes `mlst_model.json`, `params.safetensors` and the vocabulary files."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"architecture": "s2t_transformer", "config": self.config.to_dict(), "cmvn": self.cmvn}
        (path / MODEL_FILE).write_text(json.dumps(meta, indent=1))
        save_file({k: np.asarray(v) for k, v in traverse_util.flatten_dict(self.params, sep="/").items()}, str(path / PARAMS_FILE))
        if self.vocab is not None:
            self.vocab.save(path)

    # -- input checks and padding --------------------------------------------------------------------

    def _pad_features(self, features, feature_lengths):
        feats = np.asarray(features, np.float32)
        lens = np.asarray(feature_lengths, np.int32).reshape(-1)
        want = self.config.input_feat_per_channel * self.config.input_channels
        if feats.ndim != 3 or feats.shape[-1] != want:
            raise ValueError(f"features must be [batch, frames, {want}], got shape {feats.shape}")
        if lens.shape[0] != feats.shape[0]:
            raise ValueError(f"{lens.shape[0]} feature_lengths for a batch of {feats.shape[0]}")
        if (lens < 1).any() or (lens > feats.shape[1]).any():
            raise ValueError(f"feature_lengths must be in [1, {feats.shape[1]}], got {lens.tolist()}")
        if not np.isfinite(feats).all():
            raise ValueError("features contain NaN or inf")
        b, t = _batch_bucket(feats.shape[0]), _round_up(int(lens.max()), FRAME_BUCKET)
        out = np.zeros((b, t, want), np.float32)
        out[: feats.shape[0], : min(t, feats.shape[1])] = feats[:, :t]
        out_lens = np.ones((b,), np.int32)
        out_lens[: lens.shape[0]] = lens
        return out, out_lens, feats.shape[0]

    def _check_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.config.vocab_size)]
            raise ValueError(f"token ids out of range [0, {self.config.vocab_size}): {sorted(set(bad.tolist()))[:10]}")

    def lang_id(self, tgt_lang: str | int) -> int:
        """Id of the target-language tag (a language code, or an id when the model has no vocabulary)."""
        if isinstance(tgt_lang, (int, np.integer)):
            self._check_ids(np.asarray([tgt_lang]))
            return int(tgt_lang)
        if self.vocab is None:
            raise ValueError(f"unknown target language {tgt_lang!r}: this model has no vocabulary; pass the tag id")
        return self.vocab.lang_id(tgt_lang)

    # -- inference -----------------------------------------------------------------------------------

    def logits(self, features, feature_lengths, decoder_input_ids) -> np.ndarray:
        """Teacher-forced logits [B, T, V] (fp32) for decoder inputs [B, T] right-padded with the pad id."""
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
        # fairseq: up to max_len_a * frames + max_len_b tokens, then EOS.
        max_len = np.minimum(np.floor(max_len_a * lens + max_len_b).astype(np.int32) + 1, cap)
        if (max_len < 2).any():
            raise ValueError(f"max_len_a * frames + max_len_b must allow at least one token, got {max_len - 1}")
        max_steps = min(_round_up(int(max_len[:n].max()), 16), cap)
        fn = _generate_fn(self.model, beam_size, n_best, max_steps, convention == "hf")
        out = fn(self.params, feats, lens, np.full((feats.shape[0], 1), tag, np.int32), max_len,
                 np.float32(length_penalty))
        tokens = np.asarray(out.tokens)[:n]
        hyps = [[_strip(row, self.config.eos_token_id, self.config.pad_token_id) for row in sent] for sent in tokens]
        return [h[0] for h in hyps] if n_best == 1 else hyps

    def translate(self, waveforms, sample_rate: int, tgt_lang: str, **generate_kw) -> list[str]:
        """Waveforms (a list of 1-D float arrays in [-1, 1]) → detokenized translations."""
        from mlst_jax.audio import fbank, utterance_cmvn

        if self.vocab is None:
            raise ValueError("this model has no vocabulary to turn ids into text; use generate()")
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            waveforms = [waveforms]
        feats = [fbank(np.asarray(w), sample_rate) for w in waveforms]
        if self.cmvn == "utterance":
            feats = [utterance_cmvn(f) for f in feats]
        lens = np.array([len(f) for f in feats], np.int32)
        batch = np.zeros((len(feats), lens.max(), feats[0].shape[1]), np.float32)
        for i, f in enumerate(feats):
            batch[i, : len(f)] = f
        return [self.vocab.decode(ids) for ids in self.generate(batch, lens, tgt_lang, **generate_kw)]


def _strip(row: np.ndarray, eos: int, pad: int) -> list[int]:
    row = row.tolist()
    if eos in row:
        row = row[: row.index(eos)]
    return [t for t in row if t != pad]


@functools.lru_cache(maxsize=None)
def _logits_fn(model: S2TTransformer):
    return jax.jit(lambda params, f, l, t: model.apply({"params": params}, f, l, t))


@functools.lru_cache(maxsize=None)
def _generate_fn(model: S2TTransformer, beam_size: int, n_best: int, max_steps: int, hf_compat: bool):
    from mlst_jax.decode import beam_search

    cfg = model.config

    def run(params, feats, lens, prefix, max_len, length_penalty):
        variables = {"params": params}
        enc_out, enc_valid = model.apply(variables, feats, lens, method=S2TTransformer.encode)
        cross_kv = model.apply(variables, enc_out, method=S2TTransformer.precompute_cross_kv)
        cache = init_decode_cache(cfg, feats.shape[0] * beam_size, max_steps + 1, enc_out.dtype)

        def step_fn(tokens, cache, step):
            return model.apply(variables, tokens, cache, step, cross_kv, enc_valid, method=S2TTransformer.decode_step)

        return beam_search(step_fn, cache, batch_size=feats.shape[0], beam_size=beam_size, max_len=max_len,
                           decoder_start_id=cfg.decoder_start_token_id, eos_id=cfg.eos_token_id,
                           pad_id=cfg.pad_token_id, prefix=prefix, length_penalty=length_penalty, n_best=n_best,
                           max_steps=max_steps, hf_compat=hf_compat)

    return jax.jit(run)
