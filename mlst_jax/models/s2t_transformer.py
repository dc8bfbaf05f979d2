"""The fairseq `s2t_transformer` / HF `Speech2Text` speech-to-text Transformer in flax.linen.

Conv1d subsampler (stride 2 per layer, GLU) → scaled inputs + sinusoidal positions → pre-LN encoder →
pre-LN decoder with scaled token embeddings and sinusoidal positions → final LayerNorm → output projection
(tied or untied). With `adapter_dim > 0` every encoder and decoder layer ends with a residual bottleneck adapter
(`mlst_jax.finetune.adapters`).

One deliberate difference from both references: frames past an utterance's length are zeroed before every
subsampler layer, so padding never changes the outputs of the valid frames. The references let the second
conv layer see GLU(bias) values in the padded region, which makes the last one or two encoder frames of a
padded utterance depend on how much padding the batch has. On unpadded input both agree exactly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlst_jax.models import layers, stack
from mlst_jax.models.layers import BottleneckAdapter, LayerNorm, MultiHeadAttention, FeedForward

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class S2TConfig:
    """Architecture of an S2T Transformer. Field names follow HF's `Speech2TextConfig`."""

    vocab_size: int = 10000
    d_model: int = 256
    encoder_layers: int = 12
    encoder_ffn_dim: int = 2048
    encoder_attention_heads: int = 4
    decoder_layers: int = 6
    decoder_ffn_dim: int = 2048
    decoder_attention_heads: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    activation_function: str = "relu"
    conv_kernel_sizes: tuple[int, ...] = (5, 5)
    conv_channels: int = 1024
    input_feat_per_channel: int = 80
    input_channels: int = 1
    max_source_positions: int = 6000
    max_target_positions: int = 1024
    scale_embedding: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2
    dtype: str = "float32"
    # Bottleneck size of the residual adapter after every encoder and decoder layer (seed 000's Adapter
    # baseline; `mlst_jax.finetune.adapters`). 0: no adapters, and the parameter tree is the plain model's.
    adapter_dim: int = 0
    # Output size of the auxiliary CTC layer on the encoder (`mlst_jax.train.ctc`); 0: no such layer.
    ctc_vocab_size: int = 0
    remat: bool = False  # recompute each encoder / decoder layer's activations in the backward pass (saves memory)
    scan_layers: bool = False  # nn.scan over each stack's layers, params stacked [L, ...] (`mlst_jax.models.stack`)

    def __post_init__(self):
        object.__setattr__(self, "conv_kernel_sizes", tuple(int(k) for k in self.conv_kernel_sizes))
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(f"d_model={self.d_model} is not divisible by {name}={getattr(self, name)}")
        if not self.conv_kernel_sizes:
            raise ValueError("conv_kernel_sizes must name at least one conv layer")
        if self.conv_channels % 2:
            raise ValueError(f"conv_channels={self.conv_channels} must be even (GLU halves it)")
        if self.adapter_dim < 0:
            raise ValueError(f"adapter_dim={self.adapter_dim} must be >= 0 (0: no adapters)")
        if self.ctc_vocab_size < 0:
            raise ValueError(f"ctc_vocab_size={self.ctc_vocab_size} must be >= 0 (0: no CTC layer)")

    @property
    def num_conv_layers(self) -> int:
        return len(self.conv_kernel_sizes)

    def replace(self, **kw) -> "S2TConfig":
        return dataclasses.replace(self, **kw)

    def subsampled_lengths(self, lengths):
        """Encoder output lengths for input frame counts (works on ints, numpy and jax arrays)."""
        for _ in self.conv_kernel_sizes:
            lengths = (lengths - 1) // 2 + 1
        return lengths

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conv_kernel_sizes"] = list(self.conv_kernel_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "S2TConfig":
        """Builds a config from a dict with HF `Speech2TextConfig` keys; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "num_conv_layers" in d and len(kw.get("conv_kernel_sizes", cls.conv_kernel_sizes)) != d["num_conv_layers"]:
            raise ValueError(f"num_conv_layers={d['num_conv_layers']} does not match "
                             f"conv_kernel_sizes={kw.get('conv_kernel_sizes')}")
        return cls(**kw)


def _fairseq_arch(d_model: int, ffn: int, heads: int, dropout: float) -> S2TConfig:
    return S2TConfig(d_model=d_model, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, encoder_attention_heads=heads,
                     decoder_attention_heads=heads, dropout=dropout, attention_dropout=dropout,
                     activation_dropout=dropout)


# fairseq's named architectures (12 encoder / 6 decoder layers, 2 conv layers of kernel 5, 1024 channels).
NAMED_CONFIGS: dict[str, S2TConfig] = {
    "s2t_transformer_s": _fairseq_arch(256, 2048, 4, 0.1),
    "s2t_transformer_m": _fairseq_arch(512, 2048, 8, 0.15),
    "s2t_transformer_l": _fairseq_arch(1024, 4096, 16, 0.2),
}


def named_config(name: str, **overrides) -> S2TConfig:
    """fairseq architecture `name` (e.g. 's2t_transformer_m') with field overrides."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name].replace(**overrides)


class Conv1dSubsampler(nn.Module):
    """n × (Conv1d stride 2 → GLU over channels), zeroing frames past each length before every layer."""

    config: S2TConfig

    @nn.compact
    def __call__(self, x: Array, lengths: Array) -> tuple[Array, Array]:
        cfg = self.config
        n = cfg.num_conv_layers
        for i, k in enumerate(cfg.conv_kernel_sizes):
            x = x * layers.length_mask(lengths, x.shape[1])[..., None].astype(x.dtype)
            out = cfg.conv_channels if i < n - 1 else 2 * cfg.d_model
            x = nn.Conv(out, (k,), strides=(2,), padding=[(k // 2, k // 2)], dtype=jnp.dtype(cfg.dtype),
                        name=f"conv_layers_{i}")(x)
            x = layers.glu(x)
            lengths = (lengths - 1) // 2 + 1
        return x, lengths


class EncoderLayer(nn.Module):
    config: S2TConfig

    @layers.rematerializable
    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        drop = layers.Dropout(cfg.dropout)
        h = LayerNorm("self_attn_layer_norm")(x).astype(dtype)
        h = MultiHeadAttention(cfg.d_model, cfg.encoder_attention_heads, cfg.attention_dropout, dtype=dtype,
                               name="self_attn")(h, mask=mask, deterministic=deterministic)
        x = x + drop(h, deterministic=deterministic)
        h = LayerNorm("final_layer_norm")(x).astype(dtype)
        h = FeedForward(cfg.d_model, cfg.encoder_ffn_dim, cfg.activation_function, cfg.activation_dropout,
                        dtype=dtype, name="ffn")(h, deterministic)
        x = x + drop(h, deterministic=deterministic)
        if cfg.adapter_dim:
            x = BottleneckAdapter(cfg.adapter_dim, cfg.activation_dropout, dtype=dtype, name="adapter")(
                x, deterministic)
        return x


class DecoderLayer(nn.Module):
    config: S2TConfig

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.self_attn_layer_norm = LayerNorm()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.decoder_attention_heads, cfg.attention_dropout,
                                            dtype=dtype)
        self.encoder_attn_layer_norm = LayerNorm()
        self.encoder_attn = MultiHeadAttention(cfg.d_model, cfg.decoder_attention_heads, cfg.attention_dropout,
                                               dtype=dtype)
        self.final_layer_norm = LayerNorm()
        self.ffn = FeedForward(cfg.d_model, cfg.decoder_ffn_dim, cfg.activation_function, cfg.activation_dropout,
                               dtype=dtype)
        self.drop = layers.Dropout(cfg.dropout)
        if cfg.adapter_dim:
            self.adapter = BottleneckAdapter(cfg.adapter_dim, cfg.activation_dropout, dtype=dtype)

    def _rest(self, x, cross_kv, enc_mask, deterministic):
        dtype = jnp.dtype(self.config.dtype)
        h = self.encoder_attn_layer_norm(x).astype(dtype)
        h = self.encoder_attn(h, mask=enc_mask, kv=cross_kv, deterministic=deterministic)
        x = x + self.drop(h, deterministic=deterministic)
        h = self.ffn(self.final_layer_norm(x).astype(dtype), deterministic)
        x = x + self.drop(h, deterministic=deterministic)
        if self.config.adapter_dim:
            x = self.adapter(x, deterministic)
        return x

    @layers.rematerializable
    def __call__(self, x: Array, self_mask: Array, cross_kv: tuple[Array, Array], enc_mask: Array,
                 deterministic: bool = True) -> Array:
        h = self.self_attn(self.self_attn_layer_norm(x).astype(jnp.dtype(self.config.dtype)), mask=self_mask,
                           deterministic=deterministic)
        x = x + self.drop(h, deterministic=deterministic)
        return self._rest(x, cross_kv, enc_mask, deterministic)

    def decode(self, x: Array, cache: dict[str, Array], index: Array, cross_kv, enc_mask):
        """One incremental step for x [N, 1, F] where N = B·beams and cross_kv / enc_mask have batch B.

        The beams of a sentence are folded into the query axis of cross-attention ([B, beams, F]), so the
        encoder keys/values are neither copied per beam nor reordered by beam search.
        """
        h, cache = self.self_attn.decode(self.self_attn_layer_norm(x).astype(jnp.dtype(self.config.dtype)),
                                         cache, index)
        x = x + h
        b = cross_kv[0].shape[0]
        x = self._rest(x.reshape(b, -1, x.shape[-1]), cross_kv, enc_mask, True)
        return x.reshape(-1, 1, x.shape[-1]), cache

    def cross_kv(self, enc_out: Array) -> tuple[Array, Array]:
        return self.encoder_attn.project_kv(enc_out)


class S2TEncoder(nn.Module):
    config: S2TConfig

    @nn.compact
    def __call__(self, features: Array, lengths: Array, deterministic: bool = True) -> tuple[Array, Array]:
        cfg = self.config
        x, lengths = Conv1dSubsampler(cfg, name="conv")(features.astype(jnp.dtype(cfg.dtype)), lengths)
        valid = layers.length_mask(lengths, x.shape[1])
        if cfg.scale_embedding:
            x = x * math.sqrt(cfg.d_model)
        pos = layers.make_positions(valid, cfg.pad_token_id)
        x = x.astype(jnp.float32) + layers.sinusoidal_positions(pos, cfg.d_model, cfg.pad_token_id)
        x = layers.Dropout(cfg.dropout)(x, deterministic=deterministic)
        mask = layers.key_mask(valid)
        encoder_layers = stack.layer_stack(lambda name: EncoderLayer(cfg, name=name), cfg.encoder_layers,
                                           cfg.scan_layers)
        x = stack.apply_layers(encoder_layers, cfg.encoder_layers, lambda layer, x: layer(x, mask, deterministic), x)
        return LayerNorm("layer_norm")(x), valid


class S2TDecoder(nn.Module):
    config: S2TConfig

    def setup(self):
        cfg = self.config
        self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.d_model,
                                     embedding_init=nn.initializers.normal(cfg.d_model ** -0.5))
        self.layers = stack.layer_stack(lambda name: DecoderLayer(cfg, name=name), cfg.decoder_layers,
                                        cfg.scan_layers)
        self.layer_norm = LayerNorm()
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Dense(cfg.vocab_size, use_bias=False, dtype=jnp.dtype(cfg.dtype),
                                    kernel_init=nn.initializers.normal(cfg.d_model ** -0.5))
        self.drop = layers.Dropout(cfg.dropout)

    def _embed(self, tokens: Array, positions: Array) -> Array:
        cfg = self.config
        x = self.embed_tokens(tokens)
        if cfg.scale_embedding:
            x = x * math.sqrt(cfg.d_model)
        return x + layers.sinusoidal_positions(positions, cfg.d_model, cfg.pad_token_id)

    def _logits(self, x: Array) -> Array:
        x = self.layer_norm(x).astype(jnp.dtype(self.config.dtype))
        if self.config.tie_word_embeddings:
            return self.embed_tokens.attend(x).astype(jnp.float32)
        return self.lm_head(x).astype(jnp.float32)

    def __call__(self, tokens: Array, enc_out: Array, enc_valid: Array, deterministic: bool = True) -> Array:
        """Teacher-forced logits [B, T, V] for decoder inputs `tokens` [B, T] (right-padded with pad id)."""
        cfg = self.config
        pos = layers.make_positions(tokens != cfg.pad_token_id, cfg.pad_token_id)
        x = self.drop(self._embed(tokens, pos), deterministic=deterministic)
        self_mask, enc_mask = layers.causal_mask(tokens.shape[1]), layers.key_mask(enc_valid)
        x = stack.apply_layers(self.layers, cfg.decoder_layers, lambda layer, x: layer(
            x, self_mask, layer.cross_kv(enc_out), enc_mask, deterministic), x)
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
        x = self._embed(token[:, None], jnp.full((1, 1), index + self.config.pad_token_id + 1))
        enc_mask = layers.key_mask(enc_valid)
        new_cache = []
        for layer, c, kv in zip(self.layers, cache, cross_kv):
            x, c = layer.decode(x, c, index, kv, enc_mask)
            new_cache.append(c)
        return self._logits(x)[:, 0], new_cache


class S2TTransformer(layers.EncoderDecoder):
    """Encoder-decoder speech translation model; see the module docstring."""

    config: S2TConfig

    def setup(self):
        self.encoder = S2TEncoder(self.config)
        self.decoder = S2TDecoder(self.config)
        if self.config.ctc_vocab_size:
            self.ctc_proj = nn.Dense(self.config.ctc_vocab_size, name="ctc_proj")

    def __call__(self, features: Array, feature_lengths: Array, decoder_input_ids: Array,
                 deterministic: bool = True) -> Array:
        enc_out, enc_valid = self.encoder(features, feature_lengths, deterministic)
        if self.config.ctc_vocab_size and self.is_initializing():
            self.ctc_proj(enc_out)
        return self.decoder(decoder_input_ids, enc_out, enc_valid, deterministic)

    def with_ctc(self, features: Array, feature_lengths: Array, decoder_input_ids: Array,
                 deterministic: bool = True) -> tuple[Array, Array, Array]:
        """(decoder logits [B, U, V], CTC logits [B, S, C] of the encoder output, encoder valid mask [B, S])."""
        if not self.config.ctc_vocab_size:
            raise ValueError("with_ctc needs a model with ctc_vocab_size > 0")
        enc_out, enc_valid = self.encoder(features, feature_lengths, deterministic)
        logits = self.decoder(decoder_input_ids, enc_out, enc_valid, deterministic)
        return logits, self.ctc_proj(enc_out.astype(jnp.float32)), enc_valid

    def encode(self, features: Array, feature_lengths: Array, deterministic: bool = True):
        """features [B, T, 80], lengths [B] → (encoder output [B, S, d], valid mask [B, S])."""
        return self.encoder(features, feature_lengths, deterministic)


def init_decode_cache(config: S2TConfig, batch: int, max_len: int, dtype=jnp.float32) -> list[dict[str, Array]]:
    """Zeroed self-attention KV cache: one {'k','v'} [batch, H, max_len, D] per decoder layer."""
    return layers.init_kv_cache(config.decoder_layers, config.decoder_attention_heads, config.d_model, batch, max_len,
                                dtype)


def abstract_params(config: S2TConfig, n_frames: int = 64, n_tokens: int = 8):
    """Parameter shapes (jax.ShapeDtypeStruct pytree) without allocating anything."""
    model = S2TTransformer(config)
    feats = jax.ShapeDtypeStruct((1, n_frames, config.input_feat_per_channel * config.input_channels), jnp.float32)
    lens = jax.ShapeDtypeStruct((1,), jnp.int32)
    toks = jax.ShapeDtypeStruct((1, n_tokens), jnp.int32)
    return jax.eval_shape(lambda f, l, t: model.init(jax.random.PRNGKey(0), f, l, t), feats, lens, toks)["params"]

