"""Joint speech-text XMEF: the shared layers are one set of parameters used by both encoders, both task losses
train them, initialization from pretrained parts, and the paper's 1.05B size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.models.mbart import MBart, MBartConfig
from mlst_jax.models.wav2vec2 import named_config
from mlst_jax.models.joint import JointConfig, JointXMEF, abstract_params, joint_from_pretrained
from mlst_jax.models.xmef import XMEF, XMEFConfig, paper_config
from mlst_jax.models.params import count_params
from mlst_jax.train.step import _loss_sums
from mlst_jax.translator import Translator

D, V, N = 32, 40, 1600
ENC = named_config("large_lv60", hidden_size=24, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                   conv_dim=(8, 8), conv_stride=(10, 8), conv_kernel=(10, 8), num_conv_pos_embeddings=4,
                   num_conv_pos_embedding_groups=2, mask_time_prob=0.0, layerdrop=0.0)
DEC = MBartConfig(vocab_size=V, d_model=D, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=40, decoder_ffn_dim=40, max_position_embeddings=16,
                  dropout=0.0)
CONFIG = JointConfig(XMEFConfig(encoder=ENC, decoder=DEC, adaptor_layers=1), shared_layers=2)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.RandomState(0)
    xmef = jax.jit(XMEF(CONFIG.xmef).init)(jax.random.PRNGKey(0), jnp.zeros((1, N)), jnp.full((1,), N, jnp.int32),
                                           jnp.ones((1, 4), jnp.int32))["params"]
    toks = jnp.ones((1, 6), jnp.int32)
    mbart = jax.jit(MBart(DEC).init)(jax.random.PRNGKey(1), toks, toks)["params"]
    params = joint_from_pretrained(CONFIG, xmef, mbart)
    target = np.array([[4, 11, 12, 13, 2, 1], [4, 14, 15, 2, 1, 1]], np.int32)
    weights = (target != 1).astype(np.float32)
    weights[:, 0] = 0.0
    batch = {"features": rng.randn(2, N).astype(np.float32), "feature_lengths": np.array([N, N - 300], np.int32),
             "src_tokens": np.array([[5, 7, 9, 2, 1, 1], [6, 8, 2, 1, 1, 1]], np.int32),
             "decoder_input": np.array([[2, 4, 11, 12, 13, 1], [2, 4, 14, 15, 1, 1]], np.int32), "target": target,
             "loss_weights": weights, "valid": np.ones(2, np.int32)}
    return xmef, mbart, params, batch


@jax.jit
def _grads(params, batch, st, mt):
    """Gradients of st · ST loss + mt · MT loss: the train step's sums of a joint batch."""
    def loss(p):
        sums = _loss_sums(JointXMEF(CONFIG), p, batch, 0.0, None)
        return (st * sums["loss"] + mt * sums["mt_loss"]) / sums["ntokens"]
    return jax.grad(loss)(params)


def grads(params, batch, st, mt):
    return _grads(params, batch, jnp.float32(st), jnp.float32(mt))


def norm(tree):
    return float(sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree.leaves(tree)) ** 0.5)


def test_layout_and_initialization(setup):
    xmef, mbart, params, _ = setup
    assert sorted(params) == ["adaptor", "decoder", "encoder", "shared_layers", "text_encoder"]
    assert sorted(params["shared_layers"]) == ["layers_0", "layers_1"]  # one copy, used by both encoders
    speech_layers = [k for k in params["encoder"]["encoder"] if k.startswith("layers_")]
    assert speech_layers == ["layers_0"]  # 3 wav2vec 2.0 layers, the top 2 replaced
    assert [k for k in params["text_encoder"] if k.startswith("layers_")] == ["layers_0"]  # 3 mBART layers, 2 shared
    jax.tree.map(np.testing.assert_array_equal, params["shared_layers"]["layers_1"], mbart["encoder"]["layers_2"])
    jax.tree.map(np.testing.assert_array_equal, params["text_encoder"]["layers_0"], mbart["encoder"]["layers_0"])
    np.testing.assert_array_equal(params["text_encoder"]["embed_tokens"]["embedding"], mbart["shared"]["embedding"])
    jax.tree.map(np.testing.assert_array_equal, params["encoder"]["encoder"]["layers_0"],
                 xmef["encoder"]["encoder"]["layers_0"])
    jax.tree.map(np.testing.assert_array_equal, params["decoder"], xmef["decoder"])


def test_both_encoders_run_through_the_same_shared_parameters(setup):
    _, _, params, batch = setup
    model = JointXMEF(CONFIG)

    @jax.jit
    def outputs(p):
        speech, _ = model.apply({"params": p}, batch["features"], batch["feature_lengths"], method=JointXMEF.encode)
        text, _ = model.apply({"params": p}, batch["src_tokens"], method=JointXMEF.encode_text)
        return speech, text

    s0, t0 = map(np.asarray, outputs(params))
    bumped = jax.tree.map(lambda x: x, params)
    bumped["shared_layers"] = jax.tree.map(lambda x: x + 0.05, params["shared_layers"])
    s1, t1 = map(np.asarray, outputs(bumped))
    assert np.abs(s1 - s0).max() > 1e-3 and np.abs(t1 - t0).max() > 1e-3


def test_each_task_loss_trains_the_shared_layers(setup):
    _, _, params, batch = setup
    st, mt, both = grads(params, batch, 1.0, 0.0), grads(params, batch, 0.0, 1.0), grads(params, batch, 1.0, 0.5)
    assert norm(st["shared_layers"]) > 1e-4 and norm(mt["shared_layers"]) > 1e-4
    assert norm(st["text_encoder"]["embed_tokens"]) == 0.0 and norm(st["encoder"]) > 0.0  # ST: speech path only
    assert norm(mt["encoder"]) == 0.0 and norm(mt["adaptor"]) == 0.0 and norm(mt["text_encoder"]) > 0.0
    combined = jax.tree.map(lambda a, b: a + 0.5 * b, st["shared_layers"], mt["shared_layers"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), both["shared_layers"], combined)


def test_speech_and_text_decoding_run_on_the_joint_model(setup, tmp_path):
    _, _, params, batch = setup
    t = Translator(CONFIG, params)
    speech = t.generate(batch["features"], batch["feature_lengths"], 4, beam_size=2, max_len_b=4)
    text = t.generate_from_text(batch["src_tokens"], 4, beam_size=2, max_len_b=4)
    assert len(speech) == len(text) == 2 and all(row[0] == 4 and len(row) <= 5 for row in speech + text)
    t.save(tmp_path / "joint")
    again = Translator.from_pretrained(tmp_path / "joint")
    assert again.config == CONFIG and again.generate_from_text(batch["src_tokens"], 4, beam_size=2,
                                                               max_len_b=4) == text


def test_paper_size_is_1_05b():
    p = abstract_params(JointConfig(paper_config(), shared_layers=12))
    assert count_params(p) == 1_050_099_328
    assert count_params(p["shared_layers"]) == 12 * 12_596_224
    with pytest.raises(ValueError, match="shared_layers=13"):
        JointConfig(paper_config(), shared_layers=13)
