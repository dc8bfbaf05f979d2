"""wav2vec 2.0 (the fairseq / HF `Wav2Vec2Model`) in flax.linen.

Raw waveform → conv feature extractor (group-norm "base" or layer-norm "large" variant) → feature projection →
optional SpecAugment-style time/channel masking (finetuning) → convolutional positional embedding (weight norm,
grouped) → Transformer: post-LN (base) or pre-LN with a final LayerNorm (`do_stable_layer_norm`, large/LV-60).

Transformer parameter names are fairseq's (`self_attn`, `self_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`),
shared with the other models through `layers.py`; the feature extractor uses HF's names (`conv_layers_i/conv`,
`conv_layers_i/layer_norm`, so a name filter on `layer_norm` selects them too). `mlst_jax.convert.wav2vec2` maps
both checkpoint families onto these names.

Padding convention: outputs of valid frames never depend on padding. The group norm of the base variant takes its
statistics over each utterance's valid frames only, and padded frames are zeroed before the positional conv and
masked in attention. HF normalizes over the whole padded row in `Wav2Vec2GroupNormConvLayer` (which is why HF
recommends calling base models without `attention_mask`, on unpadded input): on unpadded input both agree; for a
padded base-variant batch ours equals HF run on each utterance alone, not HF run on the padded batch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlst_jax.models import layers, stack
from mlst_jax.models.layers import FeedForward, LayerNorm, MultiHeadAttention

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
    """Architecture of a wav2vec 2.0 encoder. Field names and defaults follow HF's `Wav2Vec2Config` (base)."""

    vocab_size: int = 32  # CTC head only
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.1
    layerdrop: float = 0.1
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    dtype: str = "float32"
    remat: bool = False  # recompute each Transformer layer's activations in the backward pass (saves memory)
    scan_layers: bool = False  # nn.scan over the Transformer layers, params stacked [L, ...] (`mlst_jax.models.stack`)

    def __post_init__(self):
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel) > 0:
            raise ValueError(f"conv_dim, conv_stride and conv_kernel must have one equal, non-zero length; got "
                             f"{len(self.conv_dim)}, {len(self.conv_stride)}, {len(self.conv_kernel)}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_conv_pos_embedding_groups={self.num_conv_pos_embedding_groups}")
        layers.activation(self.hidden_act)
        layers.activation(self.feat_extract_activation)

    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def has_masked_spec_embed(self) -> bool:
        """Whether the model owns the learned mask vector (HF creates it when either mask probability is > 0)."""
        return self.mask_time_prob > 0 or self.mask_feature_prob > 0

    @property
    def min_num_samples(self) -> int:
        """The shortest waveform that gives one frame (the feature extractor's receptive field)."""
        n = 1
        for k, s in reversed(list(zip(self.conv_kernel, self.conv_stride))):
            n = (n - 1) * s + k
        return n

    def replace(self, **kw) -> "Wav2Vec2Config":
        return dataclasses.replace(self, **kw)

    def feat_extract_output_lengths(self, lengths):
        """Frame counts for waveform lengths (HF `_get_feat_extract_output_lengths`; ints, numpy or jax arrays)."""
        for k, s in zip(self.conv_kernel, self.conv_stride):
            lengths = (lengths - k) // s + 1
        return lengths

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Wav2Vec2Config":
        """Builds a config from a dict with HF `Wav2Vec2Config` keys; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)

NAMED_CONFIGS: dict[str, Wav2Vec2Config] = {
    "base": Wav2Vec2Config(),
    # wav2vec2-large-lv60 (the XMEF encoder): layer-norm extractor with conv biases, pre-LN Transformer.
    "large_lv60": Wav2Vec2Config(**_LARGE, feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True),
}


def named_config(name: str, **overrides) -> Wav2Vec2Config:
    """Named wav2vec 2.0 architecture ('base', 'large_lv60') with field overrides."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown wav2vec2 architecture {name!r}; known: {sorted(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name].replace(**overrides)


class MaskedGroupNorm(nn.Module):
    """GroupNorm with one group per channel (instance norm over time) whose statistics use valid frames only."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, valid: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        x = x.astype(jnp.float32)
        w = valid[..., None].astype(jnp.float32)
        n = jnp.maximum(w.sum(1, keepdims=True), 1.0)
        mean = (x * w).sum(1, keepdims=True) / n
        var = (((x - mean) * w) ** 2).sum(1, keepdims=True) / n
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class FeatureExtractorLayer(nn.Module):
    """Conv1d (no padding) → optional norm → activation."""

    config: Wav2Vec2Config
    index: int

    @nn.compact
    def __call__(self, x: Array, lengths: Array) -> tuple[Array, Array]:
        cfg, i = self.config, self.index
        k, s = cfg.conv_kernel[i], cfg.conv_stride[i]
        x = nn.Conv(cfg.conv_dim[i], (k,), strides=(s,), padding="VALID", use_bias=cfg.conv_bias,
                    dtype=jnp.dtype(cfg.dtype), kernel_init=nn.initializers.he_normal(), name="conv")(x)
        lengths = (lengths - k) // s + 1
        if cfg.feat_extract_norm == "layer":  # HF and fairseq keep torch's default epsilon here
            x = LayerNorm("layer_norm")(x)
        elif i == 0:
            x = MaskedGroupNorm(name="layer_norm")(x, layers.length_mask(lengths, x.shape[1]))
        return layers.activation(cfg.feat_extract_activation)(x).astype(jnp.dtype(cfg.dtype)), lengths


class FeatureEncoder(nn.Module):
    """Waveforms [B, T] → frames [B, S, conv_dim[-1]] and their lengths."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, waveforms: Array, lengths: Array) -> tuple[Array, Array]:
        x = waveforms.astype(jnp.dtype(self.config.dtype))[..., None]
        for i in range(self.config.num_feat_extract_layers):
            x, lengths = FeatureExtractorLayer(self.config, i, name=f"conv_layers_{i}")(x, lengths)
        return x, lengths


class FeatureProjection(nn.Module):
    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        x = LayerNorm("layer_norm", epsilon=cfg.layer_norm_eps)(x).astype(jnp.dtype(cfg.dtype))
        x = nn.Dense(cfg.hidden_size, dtype=jnp.dtype(cfg.dtype), kernel_init=layers.xavier_uniform,
                     name="projection")(x)
        return layers.Dropout(cfg.feat_proj_dropout)(x, deterministic=deterministic)


class PositionalConvEmbedding(nn.Module):
    """Grouped Conv1d over time with weight norm over the kernel axis (torch `weight_norm(dim=2)`), 'same'
    padding (one trailing frame removed for even kernels), then the activation.

    Parameters are kept in torch layout: `weight_v` [C, C/groups, K], `weight_g` [1, 1, K], `bias` [C].
    """

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        c, k, g = cfg.hidden_size, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
        std = 2 * math.sqrt(1 / (k * c))
        v = self.param("weight_v", nn.initializers.normal(std), (c, c // g, k), jnp.float32)
        w_g = self.param("weight_g", lambda _: jnp.sqrt(jnp.sum(v ** 2, axis=(0, 1), keepdims=True)))
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        w = w_g * v * jax.lax.rsqrt(jnp.sum(v ** 2, axis=(0, 1), keepdims=True))
        dtype = jnp.dtype(cfg.dtype)
        y = jax.lax.conv_general_dilated(x.astype(dtype), w.astype(dtype), (1,), [(k // 2, k // 2)],
                                         dimension_numbers=("NWC", "OIW", "NWC"), feature_group_count=g)
        y = y + bias.astype(dtype)
        if k % 2 == 0:
            y = y[:, :-1]
        return layers.activation(cfg.feat_extract_activation)(y)


class EncoderLayer(nn.Module):
    """Post-LN (base) or pre-LN (`do_stable_layer_norm`) Transformer layer."""

    config: Wav2Vec2Config

    @layers.rematerializable
    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        drop = layers.Dropout(cfg.hidden_dropout)
        attn = MultiHeadAttention(cfg.hidden_size, cfg.num_attention_heads, cfg.attention_dropout, dtype=dtype,
                                  name="self_attn")
        attn_ln = LayerNorm("self_attn_layer_norm", epsilon=cfg.layer_norm_eps)
        ffn = FeedForward(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, cfg.activation_dropout,
                          dtype=dtype, name="ffn")
        ffn_ln = LayerNorm("final_layer_norm", epsilon=cfg.layer_norm_eps)
        if cfg.do_stable_layer_norm:
            x = x + drop(attn(attn_ln(x).astype(dtype), mask=mask, deterministic=deterministic), deterministic)
            return x + drop(ffn(ffn_ln(x).astype(dtype), deterministic), deterministic)
        x = attn_ln(x + drop(attn(x, mask=mask, deterministic=deterministic), deterministic)).astype(dtype)
        return ffn_ln(x + drop(ffn(x, deterministic), deterministic)).astype(dtype)


class Wav2Vec2Encoder(nn.Module):
    """Positional conv embedding + Transformer layers (with LayerDrop in training)."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: Array, valid: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        x = x * valid[..., None].astype(x.dtype)
        x = x + PositionalConvEmbedding(cfg, name="pos_conv_embed")(x).astype(x.dtype)
        layer_norm = LayerNorm("layer_norm", epsilon=cfg.layer_norm_eps)
        if not cfg.do_stable_layer_norm:
            x = layer_norm(x).astype(jnp.dtype(cfg.dtype))
        x = layers.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        mask = layers.key_mask(valid)
        encoder_layers = stack.layer_stack(lambda name: EncoderLayer(cfg, name=name), cfg.num_hidden_layers,
                                           cfg.scan_layers)
        x = stack.apply_layers(encoder_layers, cfg.num_hidden_layers, lambda layer, x: layer(x, mask, deterministic),
                               x, cfg.layerdrop, deterministic, self)
        if cfg.do_stable_layer_norm:
            x = layer_norm(x).astype(jnp.dtype(cfg.dtype))
        return x


def span_mask(rng: Array, lengths: Array, size: int, mask_prob: float, mask_length: int, min_masks: int) -> Array:
    """[B, size] bool spans as HF's `_compute_mask_indices`: per row int(mask_prob·len/mask_length + u) spans
    (u ~ U[0,1) shared by the batch; at least `min_masks`) of `mask_length` positions, starts drawn without
    replacement from [0, len - mask_length]."""
    if mask_length < 1 or mask_length > size:
        raise ValueError(f"mask_length={mask_length} must be in [1, {size}] (the masked axis' size)")
    k_eps, k_idx = jax.random.split(rng)
    eps = jax.random.uniform(k_eps, ())

    def n_spans(n):
        k = jnp.maximum(jnp.floor(mask_prob * n / mask_length + eps).astype(jnp.int32), min_masks)
        k = jnp.where(k * mask_length > size, size // mask_length, k)
        return jnp.minimum(k, jnp.maximum(n - (mask_length - 1), 0))

    k_max = min(max(int(mask_prob * size / mask_length + 1), min_masks), size // mask_length)
    if k_max == 0:
        return jnp.zeros((lengths.shape[0], size), bool)
    k = n_spans(lengths)
    candidates = jnp.arange(size)[None, :] < (lengths - (mask_length - 1))[:, None]
    scores = jnp.where(candidates, jax.random.uniform(k_idx, (lengths.shape[0], size)), -1.0)
    _, starts = jax.lax.top_k(scores, k_max)
    chosen = (jnp.arange(k_max)[None, :] < k[:, None]).astype(jnp.int32)
    rows = jnp.arange(lengths.shape[0])[:, None]
    is_start = jnp.zeros((lengths.shape[0], size), jnp.int32).at[rows, starts].add(chosen)
    covered = jnp.cumsum(is_start, axis=1)
    covered = covered - jnp.pad(covered, ((0, 0), (mask_length, 0)))[:, :size]
    return covered > 0


class Wav2Vec2(nn.Module):
    """HF `Wav2Vec2Model`: waveforms [B, T] and lengths [B] → (hidden states [B, S, H], valid mask [B, S])."""

    config: Wav2Vec2Config

    def setup(self):
        cfg = self.config
        self.feature_extractor = FeatureEncoder(cfg)
        self.feature_projection = FeatureProjection(cfg)
        if cfg.has_masked_spec_embed:
            self.masked_spec_embed = self.param("masked_spec_embed", nn.initializers.uniform(1.0),
                                                (cfg.hidden_size,), jnp.float32)
        self.encoder = Wav2Vec2Encoder(cfg)

    def _mask(self, x: Array, lengths: Array, mask_time_indices: Array | None, deterministic: bool) -> Array:
        """SpecAugment on the projected features: time spans → `masked_spec_embed`, channel spans → 0."""
        cfg = self.config
        if not cfg.apply_spec_augment:
            return x
        if mask_time_indices is None and cfg.mask_time_prob > 0 and not deterministic:
            mask_time_indices = span_mask(self.make_rng("dropout"), lengths, x.shape[1], cfg.mask_time_prob,
                                          cfg.mask_time_length, cfg.mask_time_min_masks)
        if mask_time_indices is not None:
            if not cfg.has_masked_spec_embed:
                raise ValueError("mask_time_indices needs the masked_spec_embed vector, which exists only when "
                                 "mask_time_prob > 0 or mask_feature_prob > 0")
            x = jnp.where(mask_time_indices[..., None], self.masked_spec_embed.astype(x.dtype), x)
        if cfg.mask_feature_prob > 0 and not deterministic:
            full = jnp.full((x.shape[0],), x.shape[-1])
            channels = span_mask(self.make_rng("dropout"), full, x.shape[-1], cfg.mask_feature_prob,
                                 cfg.mask_feature_length, cfg.mask_feature_min_masks)
            x = jnp.where(channels[:, None, :], jnp.zeros((), x.dtype), x)
        return x

    def __call__(self, waveforms: Array, lengths: Array, deterministic: bool = True,
                 mask_time_indices: Array | None = None) -> tuple[Array, Array]:
        """`mask_time_indices` [B, S] bool, when given, replaces those frames by the mask vector (as HF), also at
        inference; otherwise masks are drawn in training from the 'dropout' RNG stream when configured."""
        x, frame_lengths = self.feature_extractor(waveforms, lengths)
        valid = layers.length_mask(frame_lengths, x.shape[1])
        x = self.feature_projection(x, deterministic)
        x = self._mask(x, frame_lengths, mask_time_indices, deterministic)
        return self.encoder(x, valid, deterministic), valid


class Wav2Vec2ForCTC(nn.Module):
    """HF `Wav2Vec2ForCTC`: wav2vec 2.0 → dropout → `lm_head` → CTC logits [B, S, vocab_size] (fp32) and valid."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, waveforms: Array, lengths: Array, deterministic: bool = True) -> tuple[Array, Array]:
        cfg = self.config
        x, valid = Wav2Vec2(cfg, name="wav2vec2")(waveforms, lengths, deterministic)
        x = layers.Dropout(cfg.final_dropout)(x, deterministic=deterministic)
        return nn.Dense(cfg.vocab_size, dtype=jnp.dtype(cfg.dtype), name="lm_head")(x).astype(jnp.float32), valid


def abstract_params(config: Wav2Vec2Config, n_samples: int | None = None, ctc_head: bool = False):
    """Parameter shapes (jax.ShapeDtypeStruct pytree) without allocating anything."""
    model = (Wav2Vec2ForCTC if ctc_head else Wav2Vec2)(config)
    wav = jax.ShapeDtypeStruct((1, n_samples or config.min_num_samples), jnp.float32)
    lens = jax.ShapeDtypeStruct((1,), jnp.int32)
    return jax.eval_shape(lambda w, l: model.init(jax.random.PRNGKey(0), w, l), wav, lens)["params"]

