"""XMEF (seed 001): wav2vec 2.0 encoder → length adaptor → mBART decoder, in flax.linen.

The length adaptor is n × (Conv1d kernel k, stride s, padding k//2, channels → 2·d, GLU) with d the decoder width,
shrinking the encoder output by s^n (n=3, s=2: 8×). Optional parts: fairseq's LayerNorm on the adaptor input
(`adaptor_layer_norm`) and HF's projection to d with a LayerNorm before the convs (`adaptor_proj`, what HF's
`Wav2Vec2Adapter` does when `output_hidden_size != hidden_size`). With neither, and k=3, the adaptor is both
fairseq's `Conv1dAdaptor` and HF's `Wav2Vec2Adapter` (`add_adapter=True`, `output_hidden_size == hidden_size`).

One difference from both references: frames past an utterance's length are zeroed before every adaptor conv, so
padding never changes valid outputs (the references let the last valid frames see padded encoder states). On
unpadded input all three agree.

`XMEF` has the calling conventions of `S2TTransformer` (`encode` → (out, valid), `precompute_cross_kv`,
`decode_step`, `init_decode_cache`), so `mlst_jax.decode.beam_search` drives it unchanged; the target language is
forced as the first generated token (mBART-50: `decoder_start_token_id` = `</s>`, then the language code).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlst_jax.models import layers, mbart, wav2vec2
from mlst_jax.models.layers import LayerNorm
from mlst_jax.models.mbart import MBartConfig, MBartDecoder
from mlst_jax.models.wav2vec2 import Wav2Vec2, Wav2Vec2Config

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class XMEFConfig:
    """Encoder (`Wav2Vec2Config`), decoder (`MBartConfig`) and the length adaptor between them."""

    encoder: Wav2Vec2Config = dataclasses.field(default_factory=lambda: wav2vec2.named_config("large_lv60"))
    decoder: MBartConfig = dataclasses.field(default_factory=MBartConfig)
    adaptor_layers: int = 3
    adaptor_kernel_size: int = 3
    adaptor_stride: int = 2
    adaptor_layer_norm: bool = False
    adaptor_proj: bool = False

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            object.__setattr__(self, "encoder", Wav2Vec2Config.from_dict(self.encoder))
        if isinstance(self.decoder, dict):
            object.__setattr__(self, "decoder", MBartConfig.from_dict(self.decoder))
        if self.adaptor_layers < 0 or self.adaptor_kernel_size < 1 or self.adaptor_stride < 1:
            raise ValueError(f"adaptor_layers={self.adaptor_layers} must be >= 0, adaptor_kernel_size="
                             f"{self.adaptor_kernel_size} and adaptor_stride={self.adaptor_stride} >= 1")
        if self.adaptor_layers == 0 and not self.adaptor_proj and self.encoder.hidden_size != self.decoder.d_model:
            raise ValueError(f"without adaptor layers or projection the encoder width {self.encoder.hidden_size} "
                             f"must equal the decoder's d_model={self.decoder.d_model}")

    # The decoder's settings that beam search and the Translator read.
    pad_token_id = property(lambda self: self.decoder.pad_token_id)
    eos_token_id = property(lambda self: self.decoder.eos_token_id)
    decoder_start_token_id = property(lambda self: self.decoder.decoder_start_token_id)
    max_target_positions = property(lambda self: self.decoder.max_position_embeddings)
    vocab_size = property(lambda self: self.decoder.vocab_size)

    def replace(self, **kw) -> "XMEFConfig":
        return dataclasses.replace(self, **kw)

    def adaptor_output_lengths(self, lengths):
        """Adaptor output lengths for encoder frame counts (ints, numpy or jax arrays)."""
        k, s = self.adaptor_kernel_size, self.adaptor_stride
        for _ in range(self.adaptor_layers):
            lengths = (lengths + 2 * (k // 2) - k) // s + 1
        return lengths

    def output_lengths(self, num_samples):
        """Encoder-output (adaptor) lengths for waveform lengths."""
        return self.adaptor_output_lengths(self.encoder.feat_extract_output_lengths(num_samples))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**d, "encoder": self.encoder.to_dict(), "decoder": self.decoder.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "XMEFConfig":
        """Inverse of `to_dict` (nested encoder / decoder dicts); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def paper_config(**adaptor) -> XMEFConfig:
    """The paper's full-size model: wav2vec2-large LV-60, 3-layer adaptor, mBART-50 decoder (12 × 1024)."""
    return XMEFConfig(encoder=wav2vec2.named_config("large_lv60"), decoder=MBartConfig(), **adaptor)


class LengthAdaptor(nn.Module):
    """Encoder states [B, S, H] and lengths [B] → [B, S', d] and lengths (see the module docstring)."""

    config: XMEFConfig

    @nn.compact
    def __call__(self, x: Array, lengths: Array) -> tuple[Array, Array]:
        cfg = self.config
        d, k, s = cfg.decoder.d_model, cfg.adaptor_kernel_size, cfg.adaptor_stride
        dtype = jnp.dtype(cfg.decoder.dtype)
        if cfg.adaptor_layer_norm:
            x = LayerNorm("layer_norm")(x)
        if cfg.adaptor_proj:
            x = nn.Dense(d, dtype=dtype, kernel_init=layers.xavier_uniform, name="proj")(x.astype(dtype))
            x = LayerNorm("proj_layer_norm")(x)
        x = x.astype(dtype)
        for i in range(cfg.adaptor_layers):
            x = x * layers.length_mask(lengths, x.shape[1])[..., None].astype(x.dtype)
            x = nn.Conv(2 * d, (k,), strides=(s,), padding=[(k // 2, k // 2)], dtype=dtype,
                        kernel_init=nn.initializers.he_normal(), name=f"layers_{i}")(x)
            x = layers.glu(x)
            lengths = (lengths + 2 * (k // 2) - k) // s + 1
        return x, lengths


class XMEF(layers.EncoderDecoder):
    """wav2vec 2.0 → length adaptor → mBART decoder; see the module docstring."""

    config: XMEFConfig

    def setup(self):
        self.encoder = Wav2Vec2(self.config.encoder)
        self.adaptor = LengthAdaptor(self.config)
        self.decoder = MBartDecoder(self.config.decoder)

    def __call__(self, waveforms: Array, lengths: Array, decoder_input_ids: Array, deterministic: bool = True,
                 mask_time_indices: Array | None = None) -> Array:
        """Teacher-forced logits [B, T, V] (fp32) for waveforms [B, N], lengths [B] (samples) and decoder inputs
        [B, T] right-padded with the pad id."""
        enc_out, enc_valid = self.encode(waveforms, lengths, deterministic, mask_time_indices)
        return self.decoder(decoder_input_ids, enc_out, enc_valid, deterministic)

    def encode(self, waveforms: Array, lengths: Array, deterministic: bool = True,
               mask_time_indices: Array | None = None) -> tuple[Array, Array]:
        """waveforms [B, N], lengths [B] → (adaptor output [B, S, d], valid mask [B, S])."""
        x, valid = self.encoder(waveforms, lengths, deterministic, mask_time_indices)
        x, out_lengths = self.adaptor(x, valid.sum(-1))
        return x, layers.length_mask(out_lengths, x.shape[1])


def init_decode_cache(config: XMEFConfig, batch: int, max_len: int, dtype=jnp.float32) -> list[dict[str, Array]]:
    """Zeroed self-attention KV cache of the decoder: one {'k','v'} [batch, H, max_len, D] per layer."""
    return mbart.init_decode_cache(config.decoder, batch, max_len, dtype)


def abstract_params(config: XMEFConfig, n_samples: int | None = None, n_tokens: int = 8):
    """Parameter shapes (jax.ShapeDtypeStruct pytree) without allocating anything."""
    wav = jax.ShapeDtypeStruct((1, n_samples or config.encoder.min_num_samples), jnp.float32)
    lens = jax.ShapeDtypeStruct((1,), jnp.int32)
    toks = jax.ShapeDtypeStruct((1, n_tokens), jnp.int32)
    init = lambda w, l, t: XMEF(config).init(jax.random.PRNGKey(0), w, l, t)
    return jax.eval_shape(init, wav, lens, toks)["params"]

