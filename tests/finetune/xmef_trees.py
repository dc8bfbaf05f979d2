"""Hand-built XMEF parameter trees (shapes only) with the paper's full-size dimensions.

wav2vec2-large LV-60 encoder (layer-norm feature extractor, 24 pre-LN layers, d=1024) → 3-layer Conv1d length
adaptor (k=3, 1024 → 2048, GLU) → mBART-50 decoder (12 layers, d=1024, vocabulary 250,054, learned positions
1026). `style="hf"` names the wav2vec 2.0 layers as HF does (`attention`, `layer_norm`, `feed_forward`),
`style="fairseq"` as mlst_jax.models.wav2vec2 does (`self_attn`, `self_attn_layer_norm`, `ffn`).
"""
import jax
import jax.numpy as jnp

D, FFN, VOCAB, POSITIONS = 1024, 4096, 250_054, 1026


def _s(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _dense(n_in, n_out):
    return {"kernel": _s(n_in, n_out), "bias": _s(n_out)}


def _ln(n=D):
    return {"scale": _s(n), "bias": _s(n)}


def _attn():
    return {p: _dense(D, D) for p in ("q_proj", "k_proj", "v_proj", "out_proj")}


def wav2vec2_large(style="hf", enc_layers=24):
    kernels = (10, 3, 3, 3, 3, 2, 2)
    fe = {f"conv_layers_{i}": {"conv": {"kernel": _s(k, 1 if i == 0 else 512, 512), "bias": _s(512)},
                               "layer_norm": _ln(512)} for i, k in enumerate(kernels)}
    if style == "hf":
        layer = lambda: {"attention": _attn(), "layer_norm": _ln(),
                         "feed_forward": {"intermediate_dense": _dense(D, FFN), "output_dense": _dense(FFN, D)},
                         "final_layer_norm": _ln()}
    else:
        layer = lambda: {"self_attn": _attn(), "self_attn_layer_norm": _ln(),
                         "ffn": {"fc1": _dense(D, FFN), "fc2": _dense(FFN, D)}, "final_layer_norm": _ln()}
    encoder = {"pos_conv_embed": {"weight_v": _s(D, D // 16, 128), "weight_g": _s(1, 1, 128), "bias": _s(D)},
               "layer_norm": _ln(), **{f"layers_{i}": layer() for i in range(enc_layers)}}
    return {"feature_extractor": fe,
            "feature_projection": {"layer_norm": _ln(512), "projection": _dense(512, D)},
            "masked_spec_embed": _s(D), "encoder": encoder}


def mbart_decoder(dec_layers=12):
    layer = lambda: {"self_attn": _attn(), "self_attn_layer_norm": _ln(), "encoder_attn": _attn(),
                     "encoder_attn_layer_norm": _ln(), "fc1": _dense(D, FFN), "fc2": _dense(FFN, D),
                     "final_layer_norm": _ln()}
    return {"embed_tokens": {"embedding": _s(VOCAB, D)}, "embed_positions": {"embedding": _s(POSITIONS, D)},
            "layernorm_embedding": _ln(), **{f"layers_{i}": layer() for i in range(dec_layers)}, "layer_norm": _ln()}


def adaptor(n=3):
    return {f"layers_{i}": {"conv": {"kernel": _s(3, D, 2 * D), "bias": _s(2 * D)}} for i in range(n)}


def xmef(style="hf", nested=True):
    """`nested`: {encoder: wav2vec2, adapter, decoder}; otherwise wav2vec2's parts at the top level."""
    w2v = wav2vec2_large(style)
    top = {"encoder": w2v} if nested else dict(w2v)
    return {**top, "adapter": adaptor(), "decoder": mbart_decoder()}
