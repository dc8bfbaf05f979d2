"""mBART (HF `MBartForConditionalGeneration`, fairseq `mbart_large`) encoder and decoder in flax.linen.

Token embeddings (scaled by √d when `scale_embedding`) + learned positions (table offset by 2: position t uses
row t + 2) → `layernorm_embedding` → pre-LN layers → final `layer_norm` → output projection tied to the token
embeddings (or untied `lm_head`) + optional `final_logits_bias`. The pre-LN encoder and decoder layers are the ones
of `s2t_transformer` (same parameter names, same KV-cache decoding), configured by `MBartConfig.layer_config`.

Positions follow HF: they count from the start of the sequence whatever the padding (fairseq numbers only
non-pad tokens; both agree for right-padded input, which is what every caller here produces).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlst_jax.models import layers, stack
from mlst_jax.models.layers import LayerNorm
from mlst_jax.models.s2t_transformer import DecoderLayer, EncoderLayer, S2TConfig

Array = jax.Array

POSITION_OFFSET = 2

# mBART-50's language codes in vocabulary order (the first 25 are mBART-cc25's).
MBART50_LANG_CODES: tuple[str, ...] = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN", "it_IT", "ja_XX",
    "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO", "ru_RU", "si_LK", "tr_TR", "vi_VN",
    "zh_CN", "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK", "ml_IN",
    "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN", "th_TH", "tl_XX", "uk_UA",
    "ur_PK", "xh_ZA", "gl_ES", "sl_SI")
_BY_ISO = {code.split("_")[0]: code for code in MBART50_LANG_CODES}


def mbart50_code(lang: str) -> str:
    """mBART-50 code of a language: ISO 639-1 ('de'), or a code in any case / separator ('de_DE', 'de-de')."""
    key = lang.strip().replace("-", "_")
    for code in MBART50_LANG_CODES:
        if code.lower() == key.lower():
            return code
    if key.lower() in _BY_ISO:
        return _BY_ISO[key.lower()]
    raise ValueError(f"no mBART-50 language code for {lang!r}; known: {', '.join(MBART50_LANG_CODES)}")


def mbart50_lang_id(lang: str, sp_vocab_size: int = 250000) -> int:
    """Token id of a language code in mBART-50's vocabulary: sentencepiece pieces (+1 fairseq offset), then the
    codes in `MBART50_LANG_CODES` order (en_XX → 250004 for the released 250,000-piece model)."""
    return sp_vocab_size + 1 + MBART50_LANG_CODES.index(mbart50_code(lang))


@dataclasses.dataclass(frozen=True)
class MBartConfig:
    """Architecture of mBART. Field names follow HF's `MBartConfig`; defaults are mBART-large-50's.

    `add_final_logits_bias` (ours) gives the model HF's `final_logits_bias` [1, V]; released mBART checkpoints keep
    it at zero, so converters drop an all-zero one and the paper's parameter counts exclude it.
    """

    vocab_size: int = 250054
    d_model: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    max_position_embeddings: int = 1024
    scale_embedding: bool = True
    tie_word_embeddings: bool = True
    add_final_logits_bias: bool = False
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2
    dtype: str = "float32"
    remat: bool = False  # recompute each encoder / decoder layer's activations in the backward pass (saves memory)
    scan_layers: bool = False  # nn.scan over each stack's layers, params stacked [L, ...] (`mlst_jax.models.stack`)

    def __post_init__(self):
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(f"d_model={self.d_model} is not divisible by {name}={getattr(self, name)}")
        layers.activation(self.activation_function)

    @property
    def max_target_positions(self) -> int:
        return self.max_position_embeddings

    @property
    def layer_config(self) -> S2TConfig:
        """The settings of the shared pre-LN encoder/decoder layers, as the `S2TConfig` they read."""
        shared = ("d_model", "encoder_ffn_dim", "encoder_attention_heads", "decoder_ffn_dim",
                  "decoder_attention_heads", "dropout", "attention_dropout", "activation_dropout",
                  "activation_function", "dtype", "remat")
        return S2TConfig(vocab_size=self.vocab_size, **{k: getattr(self, k) for k in shared})

    def replace(self, **kw) -> "MBartConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MBartConfig":
        """Builds a config from a dict with HF `MBartConfig` keys; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _embed(cfg: MBartConfig, name: str | None = None) -> nn.Embed:
    """Token embedding; its compute dtype is also that of the tied output projection (`attend`)."""
    return nn.Embed(cfg.vocab_size, cfg.d_model, dtype=jnp.dtype(cfg.dtype),
                    embedding_init=nn.initializers.normal(0.02), name=name)


def _positions(cfg: MBartConfig, name: str | None = None) -> nn.Embed:
    return nn.Embed(cfg.max_position_embeddings + POSITION_OFFSET, cfg.d_model,
                    embedding_init=nn.initializers.normal(0.02), name=name)


class _Embedder(nn.Module):
    """Shared part of encoder and decoder: token + position embeddings → layernorm_embedding."""

    config: MBartConfig
    shared: nn.Module | None = None  # the token embedding when owned by the parent (MBart's `shared`)

    def setup(self):
        cfg = self.config
        if self.shared is None:
            self.embed_tokens = _embed(cfg)
        self.embed_positions = _positions(cfg)
        self.layernorm_embedding = LayerNorm()
        self.layer_norm = LayerNorm()
        self.drop = layers.Dropout(cfg.dropout)

    @property
    def tokens(self) -> nn.Embed:
        return self.shared if self.shared is not None else self.embed_tokens

    def embed(self, ids: Array, positions: Array, deterministic: bool) -> Array:
        cfg = self.config
        x = self.tokens(ids)
        if cfg.scale_embedding:
            x = x * math.sqrt(cfg.d_model)
        x = x + self.embed_positions(positions + POSITION_OFFSET)
        return self.drop(self.layernorm_embedding(x), deterministic=deterministic)


class MBartEncoder(_Embedder):
    """Token ids [B, S] (right-padded with pad id) → (output [B, S, d], valid mask [B, S])."""

    def setup(self):
        super().setup()
        cfg = self.config
        self.layers = stack.layer_stack(lambda name: EncoderLayer(cfg.layer_config, name=name), cfg.encoder_layers,
                                        cfg.scan_layers)

    def __call__(self, input_ids: Array, deterministic: bool = True) -> tuple[Array, Array]:
        cfg = self.config
        valid = input_ids != cfg.pad_token_id
        x = self.embed(input_ids, jnp.arange(input_ids.shape[1])[None], deterministic)
        mask = layers.key_mask(valid)
        x = stack.apply_layers(self.layers, cfg.encoder_layers, lambda layer, x: layer(x, mask, deterministic), x,
                               cfg.encoder_layerdrop, deterministic, self)
        return self.layer_norm(x).astype(jnp.dtype(cfg.dtype)), valid


class MBartDecoder(_Embedder):
    """Teacher-forced logits, cross-attention K/V precomputation and one-step KV-cache decoding."""

    def setup(self):
        super().setup()
        cfg = self.config
        self.layers = stack.layer_stack(lambda name: DecoderLayer(cfg.layer_config, name=name), cfg.decoder_layers,
                                        cfg.scan_layers)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Dense(cfg.vocab_size, use_bias=False, dtype=jnp.dtype(cfg.dtype),
                                    kernel_init=nn.initializers.normal(0.02))
        if cfg.add_final_logits_bias:
            self.final_logits_bias = self.param("final_logits_bias", nn.initializers.zeros, (1, cfg.vocab_size),
                                                jnp.float32)

    def _logits(self, x: Array) -> Array:
        cfg = self.config
        x = self.layer_norm(x).astype(jnp.dtype(cfg.dtype))
        logits = self.tokens.attend(x) if cfg.tie_word_embeddings else self.lm_head(x)
        logits = logits.astype(jnp.float32)
        return logits + self.final_logits_bias[0] if cfg.add_final_logits_bias else logits

    def __call__(self, tokens: Array, enc_out: Array, enc_valid: Array, deterministic: bool = True) -> Array:
        """Logits [B, T, V] (fp32) for decoder inputs `tokens` [B, T] right-padded with the pad id."""
        cfg = self.config
        x = self.embed(tokens, jnp.arange(tokens.shape[1])[None], deterministic)
        self_mask, enc_mask = layers.causal_mask(tokens.shape[1]), layers.key_mask(enc_valid)
        x = stack.apply_layers(self.layers, cfg.decoder_layers, lambda layer, x: layer(
            x, self_mask, layer.cross_kv(enc_out), enc_mask, deterministic), x, cfg.decoder_layerdrop, deterministic,
            self)
        return self._logits(x)

    def precompute(self, enc_out: Array) -> list[tuple[Array, Array]]:
        """Cross-attention keys/values of every layer, computed once per source."""
        stack.per_layer_only(self.layers, "KV-cache decoding")
        return [layer.cross_kv(enc_out) for layer in self.layers]

    def decode_step(self, token: Array, cache: list[dict[str, Array]], index: Array,
                    cross_kv: list[tuple[Array, Array]], enc_valid: Array) -> tuple[Array, list]:
        """token [N] at position `index` (0 = decoder start) → logits [N, V] and the updated cache.

        N is the batch B of `cross_kv` / `enc_valid` times the number of beams (rows batch-major).
        """
        stack.per_layer_only(self.layers, "KV-cache decoding")
        x = self.embed(token[:, None], jnp.reshape(index, (1, 1)), True)
        enc_mask = layers.key_mask(enc_valid)
        new_cache = []
        for layer, c, kv in zip(self.layers, cache, cross_kv):
            x, c = layer.decode(x, c, index, kv, enc_mask)
            new_cache.append(c)
        return self._logits(x)[:, 0], new_cache


class MBart(layers.EncoderDecoder):
    """HF `MBartForConditionalGeneration`: with `tie_word_embeddings`, encoder, decoder and output projection share
    the token embedding `shared`; without, each has its own (`embed_tokens`, `lm_head`), as in transformers v5."""

    config: MBartConfig

    def setup(self):
        self.shared = _embed(self.config) if self.config.tie_word_embeddings else None
        self.encoder = MBartEncoder(self.config, shared=self.shared)
        self.decoder = MBartDecoder(self.config, shared=self.shared)

    def __call__(self, input_ids: Array, decoder_input_ids: Array, deterministic: bool = True) -> Array:
        enc_out, enc_valid = self.encoder(input_ids, deterministic)
        return self.decoder(decoder_input_ids, enc_out, enc_valid, deterministic)

    def encode(self, input_ids: Array, deterministic: bool = True) -> tuple[Array, Array]:
        """input_ids [B, S] (pad = `pad_token_id`) → (encoder output [B, S, d], valid mask [B, S])."""
        return self.encoder(input_ids, deterministic)


def init_decode_cache(config: MBartConfig, batch: int, max_len: int, dtype=jnp.float32) -> list[dict[str, Array]]:
    """Zeroed self-attention KV cache: one {'k','v'} [batch, H, max_len, D] per decoder layer."""
    return layers.init_kv_cache(config.decoder_layers, config.decoder_attention_heads, config.d_model, batch, max_len,
                                dtype)


def abstract_params(config: MBartConfig, n_tokens: int = 8):
    """Parameter shapes (jax.ShapeDtypeStruct pytree) of `MBart` without allocating anything."""
    toks = jax.ShapeDtypeStruct((1, n_tokens), jnp.int32)
    return jax.eval_shape(lambda s, t: MBart(config).init(jax.random.PRNGKey(0), s, t), toks, toks)["params"]


def abstract_decoder_params(config: MBartConfig, n_tokens: int = 8, n_source: int = 4):
    """Parameter shapes of a standalone `MBartDecoder` (its own `embed_tokens`), as XMEF uses it."""
    toks = jax.ShapeDtypeStruct((1, n_tokens), jnp.int32)
    enc = jax.ShapeDtypeStruct((1, n_source, config.d_model), jnp.float32)
    valid = jax.ShapeDtypeStruct((1, n_source), jnp.bool_)
    init = lambda t, e, v: MBartDecoder(config).init(jax.random.PRNGKey(0), t, e, v)
    return jax.eval_shape(init, toks, enc, valid)["params"]

