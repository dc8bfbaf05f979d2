"""The joint speech-text model (seed 001 §2.4, §3.2): a text encoder (mBART encoder) whose top layers are the top
layers of the speech encoder, and one decoder; trained on ST and MT examples in one run with task weights.

Speech: wav2vec 2.0 with its top `shared_layers` Transformer layers removed (its final LayerNorm kept) → length
adaptor → the shared mBART encoder layers → the mBART encoder's final LayerNorm → decoder. Text (the source
transcript): mBART embeddings → the text encoder's own bottom layers (mBART `encoder_layers - shared_layers`, none in
the paper) → the same shared layers → the same final LayerNorm → decoder. This is fairseq's
`dual_input_xm_transformer --stack-w2v-mbart-encoder --drop-w2v-layers 12` layout; at the paper's sizes (24-layer
wav2vec 2.0, 12-layer mBART encoder, `shared_layers=12`) the model has 1,050,099,328 parameters ("1.05B", Tables 3-5),
the text encoder keeping its own 250,054 × 1024 token embedding.

Parameters: `encoder` (wav2vec 2.0, bottom layers), `adaptor`, `text_encoder` (embeddings, `layernorm_embedding`,
unshared layers, final `layer_norm`), `shared_layers` (`layers_i`, one copy used by both paths) and `decoder`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlst_jax.models import layers
from mlst_jax.models.mbart import MBartDecoder, _Embedder
from mlst_jax.models.params import stack_layers, unstack_layers
from mlst_jax.models.s2t_transformer import EncoderLayer
from mlst_jax.models.wav2vec2 import Wav2Vec2
from mlst_jax.models.xmef import LengthAdaptor, XMEFConfig

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class JointConfig:
    """An XMEF config (its encoder is the full pretrained wav2vec 2.0, its decoder config also describes the mBART
    text encoder) and the number of top speech-encoder layers shared with the text encoder."""

    xmef: XMEFConfig
    shared_layers: int = 12

    def __post_init__(self):
        n, e = self.xmef.encoder.num_hidden_layers, self.xmef.decoder.encoder_layers
        if not 1 <= self.shared_layers <= min(n, e):
            raise ValueError(f"shared_layers={self.shared_layers} must be in [1, min(wav2vec 2.0 layers {n}, mBART "
                             f"encoder_layers {e})]")
        if self.xmef.encoder.hidden_size != self.xmef.decoder.d_model and self.xmef.adaptor_layers == 0:
            raise ValueError("the shared layers need the adaptor to map the speech width to the mBART d_model")

    # The decoder's settings that beam search and the Translator read.
    pad_token_id = property(lambda self: self.xmef.pad_token_id)
    eos_token_id = property(lambda self: self.xmef.eos_token_id)
    decoder_start_token_id = property(lambda self: self.xmef.decoder_start_token_id)
    max_target_positions = property(lambda self: self.xmef.max_target_positions)
    vocab_size = property(lambda self: self.xmef.vocab_size)
    encoder = property(lambda self: self.xmef.encoder)  # the speech input's front end (samples, receptive field)
    decoder = property(lambda self: self.xmef.decoder)

    def to_dict(self) -> dict[str, Any]:
        return {"xmef": self.xmef.to_dict(), "shared_layers": self.shared_layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JointConfig":
        return cls(XMEFConfig.from_dict(d["xmef"]), d["shared_layers"])

    @property
    def speech_config(self):
        """The wav2vec 2.0 config of the speech encoder's own (bottom) layers."""
        return self.xmef.encoder.replace(num_hidden_layers=self.xmef.encoder.num_hidden_layers - self.shared_layers)


class TextEncoder(_Embedder):
    """mBART encoder embeddings, its unshared bottom layers, and its final LayerNorm (`finish`)."""

    num_layers: int = 0

    def setup(self):
        super().setup()
        self.layers = [EncoderLayer(self.config.layer_config, name=f"layers_{i}") for i in range(self.num_layers)]

    def __call__(self, ids: Array, deterministic: bool = True) -> tuple[Array, Array]:
        valid = ids != self.config.pad_token_id
        x = self.embed(ids, jnp.arange(ids.shape[1])[None], deterministic)
        for layer in self.layers:
            x = layer(x, layers.key_mask(valid), deterministic)
        return x, valid

    def finish(self, x: Array) -> Array:
        return self.layer_norm(x).astype(jnp.dtype(self.config.dtype))


class SharedLayers(nn.Module):
    config: Any  # MBartConfig
    num_layers: int

    @nn.compact
    def __call__(self, x: Array, valid: Array, deterministic: bool = True) -> Array:
        for i in range(self.num_layers):
            x = EncoderLayer(self.config.layer_config, name=f"layers_{i}")(x, layers.key_mask(valid), deterministic)
        return x


class JointXMEF(layers.EncoderDecoder):
    """Speech and text encoders with shared top layers, one mBART decoder; `encode` / `precompute_cross_kv` /
    `decode_step` are XMEF's (speech input), so the same beam search drives it."""

    config: JointConfig

    def setup(self):
        cfg = self.config
        dec = cfg.xmef.decoder
        self.encoder = Wav2Vec2(cfg.speech_config)
        self.adaptor = LengthAdaptor(cfg.xmef)
        self.text_encoder = TextEncoder(dec, num_layers=dec.encoder_layers - cfg.shared_layers)
        self.shared_layers = SharedLayers(dec, cfg.shared_layers)
        self.decoder = MBartDecoder(dec)

    def __call__(self, waveforms, lengths, src_ids, decoder_input_ids, deterministic: bool = True):
        """(speech logits, text logits) for the same decoder inputs: initializes every parameter."""
        s_out, s_valid = self.encode(waveforms, lengths, deterministic)
        t_out, t_valid = self.encode_text(src_ids, deterministic)
        return (self.decoder(decoder_input_ids, s_out, s_valid, deterministic),
                self.decoder(decoder_input_ids, t_out, t_valid, deterministic))

    def encode(self, waveforms, lengths, deterministic: bool = True) -> tuple[Array, Array]:
        x, valid = self.encoder(waveforms, lengths, deterministic)
        x, out_lengths = self.adaptor(x, valid.sum(-1))
        valid = layers.length_mask(out_lengths, x.shape[1])
        return self.text_encoder.finish(self.shared_layers(x, valid, deterministic)), valid

    def encode_text(self, src_ids, deterministic: bool = True) -> tuple[Array, Array]:
        x, valid = self.text_encoder(src_ids, deterministic)
        return self.text_encoder.finish(self.shared_layers(x, valid, deterministic)), valid


def abstract_params(config: JointConfig, n_tokens: int = 8):
    """Parameter shapes without allocating anything."""
    n = config.xmef.encoder.min_num_samples
    spec = jax.ShapeDtypeStruct
    args = (spec((1, n), jnp.float32), spec((1,), jnp.int32), spec((1, n_tokens), jnp.int32),
            spec((1, n_tokens), jnp.int32))
    return jax.eval_shape(lambda *a: JointXMEF(config).init(jax.random.PRNGKey(0), *a), *args)["params"]


def joint_from_pretrained(config: JointConfig, xmef_params: dict, mbart_params: dict) -> dict:
    """Joint parameters from XMEF parameters (encoder, adaptor, decoder) and the mBART model they came from: the
    speech encoder keeps its bottom layers (the top `shared_layers` are replaced), the text encoder and the shared
    layers are the mBART encoder's (its top `shared_layers` become the shared ones); the text encoder's token
    embedding is a copy of mBART's. The parts may come in either layer layout (`scan_layers`); the result has the
    config's."""
    xmef_params, mbart_params = unstack_layers(xmef_params), unstack_layers(mbart_params)
    n_own = config.speech_config.num_hidden_layers
    e = config.xmef.decoder.encoder_layers
    k = config.shared_layers
    enc = dict(xmef_params["encoder"])
    enc["encoder"] = {name: v for name, v in enc["encoder"].items()
                      if not name.startswith("layers_") or int(name.split("_")[1]) < n_own}
    menc = mbart_params["encoder"]
    embed = mbart_params["shared"] if "shared" in mbart_params else menc["embed_tokens"]
    text = {"embed_tokens": jax.tree.map(jnp.array, embed), "embed_positions": menc["embed_positions"],
            "layernorm_embedding": menc["layernorm_embedding"], "layer_norm": menc["layer_norm"],
            **{f"layers_{i}": menc[f"layers_{i}"] for i in range(e - k)}}
    shared = {f"layers_{i}": menc[f"layers_{e - k + i}"] for i in range(k)}
    params = {"encoder": enc, "adaptor": xmef_params["adaptor"], "text_encoder": text, "shared_layers": shared,
              "decoder": xmef_params["decoder"]}
    abstract = abstract_params(config)
    params = stack_layers(params, abstract)
    expected = jax.tree.map(lambda x: tuple(x.shape), abstract)
    got = jax.tree.map(lambda x: tuple(np.shape(x)), params)
    if expected != got:
        raise ValueError(f"pretrained parts do not fit the joint config: expected {expected}, got {got}")
    return params
