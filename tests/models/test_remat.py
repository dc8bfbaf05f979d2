"""`remat=True` (per-layer jax.checkpoint): same parameter tree, loss and gradients as without; remat really happens;
training (dropout, LayerDrop) and KV-cache decoding still work. Also XMEF's bfloat16 compute."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.models import mbart, wav2vec2, xmef
from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.models.xmef import XMEF, XMEFConfig

S2T = S2TConfig(vocab_size=23, d_model=16, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
                encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=8, conv_kernel_sizes=(3,),
                input_feat_per_channel=6, dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
W2V = wav2vec2.named_config("large_lv60", hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=24, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, layerdrop=0.5)
MB = mbart.MBartConfig(vocab_size=29, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=16,
                       decoder_layerdrop=0.5)
XM = XMEFConfig(encoder=W2V, decoder=MB, adaptor_layers=2)

WAVE = np.random.RandomState(0).randn(2, 400).astype(np.float32)
WAVE_LENS = np.array([400, 310], np.int32)
TOKENS = np.array([[2, 5, 7, 9, 1], [2, 8, 3, 1, 1]], np.int32)


def s2t_case(remat):
    feats = np.random.RandomState(1).randn(2, 12, 6).astype(np.float32)
    return S2TTransformer(S2T.replace(remat=remat)), (feats, np.array([12, 9], np.int32), TOKENS % S2T.vocab_size)


def xmef_case(remat):
    cfg = XM.replace(encoder=W2V.replace(remat=remat), decoder=MB.replace(remat=remat))
    return XMEF(cfg), (WAVE, WAVE_LENS, TOKENS)


CASES = {"s2t": s2t_case, "xmef": xmef_case}  # XMEF: wav2vec 2.0 and mBART layers
# Faster XLA:CPU compiles (compiling is most of each test's time); the same options with and without remat.
FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def run(fn, *args):
    return jax.jit(fn).lower(*args).compile(FAST)(*args)


def init(model, inputs):
    return run(lambda: model.init(jax.random.PRNGKey(0), *inputs)["params"])


def loss_fn(model, inputs, deterministic=True, rng=None):
    def loss(params):
        out = model.apply({"params": params}, *inputs, deterministic, rngs=None if rng is None else {"dropout": rng})
        logits = out[0] if isinstance(out, tuple) else out
        return jnp.mean(logits.astype(jnp.float32) ** 2)
    return loss


@pytest.mark.parametrize("name", list(CASES))
def test_remat_same_params_loss_and_grads(name):
    """In training mode: dropout and LayerDrop (XMEF's encoder and decoder) draw the same masks with remat."""
    (plain, inputs), (remat, _) = CASES[name](False), CASES[name](True)
    params = init(plain, inputs)
    remat_params = jax.eval_shape(lambda: remat.init(jax.random.PRNGKey(0), *inputs)["params"])
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, remat_params)  # same names and shapes

    rng = jax.random.PRNGKey(3)
    (v0, g0), (v1, g1) = (run(jax.value_and_grad(loss_fn(m, inputs, False, rng)), params) for m in (plain, remat))
    assert abs(float(v0) - float(v1)) <= 1e-6 * max(1.0, abs(float(v0)))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-6
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(g0))) > 0

    # jax.checkpoint's primitive ("remat2" in current jax, "checkpoint" in older ones): one per Transformer layer
    remats = lambda m: len(re.findall(r"\b(?:checkpoint|remat\d*)\[",
                                      str(jax.make_jaxpr(jax.grad(loss_fn(m, inputs)))(params))))
    assert remats(plain) == 0 and remats(remat) == {"s2t": 4, "xmef": 4}[name]


def test_remat_kv_cache_decoding():
    """`decode_step` of a remat model gives the teacher-forced logits."""
    model, inputs = xmef_case(True)
    tokens = inputs[-1]

    def check(params):
        v = {"params": params}
        full = model.apply(v, *inputs)
        enc_out, enc_valid = model.apply(v, *inputs[:-1], method="encode")
        cross = model.apply(v, enc_out, method="precompute_cross_kv")
        cache = xmef.init_decode_cache(model.config, tokens.shape[0], tokens.shape[1])
        steps = []
        for t in range(tokens.shape[1]):
            logits, cache = model.apply(v, tokens[:, t], cache, jnp.int32(t), cross, enc_valid, method="decode_step")
            steps.append(logits)
        return full, jnp.stack(steps, axis=1)

    full, stepped = run(check, init(model, inputs))
    np.testing.assert_allclose(stepped, full, atol=1e-5)


def test_config_round_trip():
    for cfg in (S2T.replace(remat=True), W2V.replace(remat=True), MB.replace(remat=True)):
        assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert MB.replace(remat=True).layer_config.remat
    xm = XM.replace(encoder=W2V.replace(remat=True), decoder=MB.replace(remat=True))
    assert XMEFConfig.from_dict(xm.to_dict()) == xm


def test_xmef_bfloat16_compute():
    """bfloat16 compute: float32 parameters and logits, every matmul and conv in bfloat16, close to float32."""
    f32, inputs = XMEF(XM), (WAVE, WAVE_LENS, TOKENS)
    bf16 = XMEF(XM.replace(encoder=W2V.replace(dtype="bfloat16"), decoder=MB.replace(dtype="bfloat16")))
    params = init(f32, inputs)
    bf16_params = jax.eval_shape(lambda: bf16.init(jax.random.PRNGKey(0), *inputs)["params"])
    assert jax.tree.map(lambda x: (x.shape, x.dtype), bf16_params) == jax.tree.map(lambda x: (x.shape, x.dtype), params)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    ref, out = (run(lambda p: m.apply({"params": p}, *inputs), params) for m in (f32, bf16))
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
    diff = jnp.abs(jax.nn.log_softmax(out) - jax.nn.log_softmax(ref))
    assert float(jnp.max(diff)) < 0.1
    assert float(jnp.max(diff)) > 0  # really computed differently

    text = jax.jit(lambda p: bf16.apply({"params": p}, *inputs)).lower(params).as_text()
    ops = [line for line in text.splitlines() if "dot_general" in line or "convolution" in line]
    assert ops and all("bf16" in line for line in ops)
