"""`scan_layers` (nn.scan over each layer stack, parameters stacked [L, ...]): given the same parameters (per-layer ↔
stacked), the same loss and gradients as the per-layer model for S2T (fully shared and bilingual plans), wav2vec 2.0,
mBART and XMEF (also with remat inside the scan); LayerDrop and dropout draw per layer; LNA masks, sharding rules,
the Translator, config validation and the train step's ahead-of-time compile work on scanned models."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.finetune import lna
from mlst_jax.models import mbart, wav2vec2
from mlst_jax.models.losses import label_smoothed_nll
from mlst_jax.models.params import count_params, stack_layers, unstack_layers
from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.models.xmef import XMEF, XMEFConfig
from mlst_jax.sharing.strategies import make_plan
from mlst_jax.train import sharding as shd
from mlst_jax.train.step import _loss_sums

S2T = S2TConfig(vocab_size=23, d_model=16, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
                encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=8, conv_kernel_sizes=(3,),
                input_feat_per_channel=6)
W2V = wav2vec2.named_config("large_lv60", hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                            intermediate_size=24, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, layerdrop=0.5)
MB = mbart.MBartConfig(vocab_size=29, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=16,
                       encoder_layerdrop=0.5, decoder_layerdrop=0.5)
XM = XMEFConfig(encoder=W2V, decoder=MB, adaptor_layers=2)
LANGS = ("de", "es")
TOL = 1e-5
# Faster XLA:CPU compiles (compiling is most of each test's time); the same options for every variant.
FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}

R = np.random.RandomState(0)
WAVE, WAVE_LENS = R.randn(2, 400).astype(np.float32), np.array([400, 310], np.int32)
TOKENS = np.array([[2, 5, 7, 9, 1], [2, 8, 3, 1, 1]], np.int32)
TARGET = np.array([[5, 7, 9, 2, 1], [8, 3, 2, 1, 1]], np.int32)
WEIGHTS = (TARGET != 1).astype(np.float32)


def scanned(config, remat=False):
    if isinstance(config, XMEFConfig):
        return config.replace(encoder=scanned(config.encoder, remat), decoder=scanned(config.decoder, remat))
    return config.replace(scan_layers=True, remat=remat)


def s2t_batch():
    """A stratified batch: 2 language groups of 2 rows."""
    r = np.random.RandomState(1)
    return {"features": r.randn(2, 2, 12, 6).astype(np.float32), "feature_lengths": np.array([[12, 9], [7, 12]]),
            "decoder_input": np.stack([TOKENS, TOKENS[::-1]]) % S2T.vocab_size, "target": np.stack([TARGET] * 2),
            "loss_weights": np.stack([WEIGHTS] * 2), "valid": np.ones((2, 2), np.int32),
            "group_lang": np.array([0, 1], np.int32)}


def nll(logits):
    loss, _ = label_smoothed_nll(logits, TARGET % logits.shape[-1], WEIGHTS, 0.1)
    return loss / WEIGHTS.sum()


class Case:
    """A model family: `module(config)`, its inputs, and `loss(model, params, deterministic, rng)`."""

    def __init__(self, config, module, inputs, loss=None, strategy=None):
        self.config, self.module, self.inputs, self.strategy = config, module, inputs, strategy
        self.loss = loss or (lambda model, p, det, rng: nll(self._apply(model, p, det, rng)))

    def _apply(self, model, params, det, rng):
        return model.apply({"params": params}, *self.inputs, det, rngs={"dropout": rng})

    def base(self, config, seed=0):
        model = self.module(config)
        return jax.jit(lambda: model.init(jax.random.PRNGKey(seed), *self.model_inputs)["params"])()

    @property
    def model_inputs(self):
        if self.strategy is None:
            return self.inputs
        b = s2t_batch()
        return b["features"][0], b["feature_lengths"][0], b["decoder_input"][0]


def s2t_loss(strategy):
    def loss(model, params, det, rng):
        plan = make_plan(strategy, unstored(params, strategy), LANGS)
        sums = _loss_sums(model, params, s2t_batch(), 0.1, None if det else rng, plan)
        return sums["loss"] / sums["ntokens"]
    return loss


def unstored(params, strategy):
    """Base (one copy) parameter shapes of stored parameters."""
    return params if strategy == "multilingual" else jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                                                                  params)


CASES = {
    "s2t_shared": Case(S2T, S2TTransformer, None, s2t_loss("multilingual"), "multilingual"),
    "s2t_bilingual": Case(S2T, S2TTransformer, None, s2t_loss("bilingual"), "bilingual"),
    "wav2vec2": Case(W2V, wav2vec2.Wav2Vec2, (WAVE, WAVE_LENS),
                     lambda model, p, det, rng: jnp.mean(model.apply({"params": p}, WAVE, WAVE_LENS, det,
                                                                     rngs={"dropout": rng})[0] ** 2)),
    "mbart": Case(MB, mbart.MBart, (TOKENS[:, ::-1] % MB.vocab_size, TOKENS)),
    "xmef": Case(XM, XMEF, (WAVE, WAVE_LENS, TOKENS)),
}


def stored_params(case, config):
    """Per-layer parameters and their scanned layout; a bilingual plan stores one (different) copy per language,
    [C, ...] and [C, L, ...]."""
    abstract = jax.eval_shape(lambda: case.module(config).init(jax.random.PRNGKey(0), *case.model_inputs))["params"]
    copies = [jax.device_get(case.base(case.config, seed)) for seed in range(len(LANGS) if
                                                                             case.strategy == "bilingual" else 1)]
    if case.strategy != "bilingual":
        return copies[0], stack_layers(copies[0], abstract)
    stack = lambda trees: jax.tree.map(lambda *xs: np.stack(xs), *trees)
    return stack(copies), stack([stack_layers(p, abstract) for p in copies])


def per_layer_grads(grads, case):
    """Scanned gradients in the per-layer layout (per copy under the bilingual plan)."""
    if case.strategy != "bilingual":
        return unstack_layers(grads)
    per_copy = [unstack_layers(jax.tree.map(lambda x: x[c], grads)) for c in range(len(LANGS))]
    return jax.tree.map(lambda *xs: np.stack(xs), *per_copy)


def value_and_grad(case, config, params, deterministic=True, rng=None):
    model = case.module(config)
    fn = jax.value_and_grad(lambda p, k: case.loss(model, p, deterministic, k))
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return jax.jit(fn).lower(params, rng).compile(FAST)(params, rng)


@pytest.fixture(scope="module")
def results():
    """name -> (per-layer (loss, grads), scanned (loss, grads) in the per-layer layout)."""
    out = {}
    for name, case in CASES.items():
        plain, stacked = stored_params(case, scanned(case.config))
        v0, g0 = value_and_grad(case, case.config, plain)
        v1, g1 = value_and_grad(case, scanned(case.config), stacked)
        out[name] = (float(v0), jax.device_get(g0)), (float(v1), per_layer_grads(jax.device_get(g1), case))
    return out


def max_diff(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a),
                                                                                    jax.tree.leaves(b)))


@pytest.mark.parametrize("name", list(CASES))
def test_same_loss_and_gradients(results, name):
    (v0, g0), (v1, g1) = results[name]
    assert abs(v0 - v1) <= TOL * max(1.0, abs(v0))
    assert max_diff(g0, g1) <= TOL
    assert sum(float(np.abs(g).sum()) for g in jax.tree.leaves(g0)) > 0


def test_bilingual_copies_get_their_own_gradients(results):
    (_, g0), _ = results["s2t_bilingual"]
    q = g0["decoder"]["layers_1"]["self_attn"]["q_proj"]["kernel"]
    assert q.shape[0] == 2 and np.abs(q[0]).sum() > 0 and np.abs(q[1]).sum() > 0 and not np.allclose(q[0], q[1])


def test_remat_inside_the_scan():
    """XMEF with remat and scan_layers: the same loss and gradients; one jax.checkpoint and one scan per stack."""
    case = CASES["xmef"]
    plain, stacked = stored_params(case, scanned(XM))
    (v0, g0), (v1, g1) = (value_and_grad(case, c, p) for c, p in ((XM, plain), (scanned(XM, remat=True), stacked)))
    assert abs(float(v0) - float(v1)) <= TOL * max(1.0, abs(float(v0)))
    assert max_diff(jax.device_get(g0), unstack_layers(jax.device_get(g1))) <= TOL
    model = XMEF(scanned(XM, remat=True))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: case.loss(model, p, True, jax.random.PRNGKey(0))))(stacked))
    assert len(re.findall(r"\b(?:checkpoint|remat\d*)\[", jaxpr)) == 2  # wav2vec 2.0 and mBART decoder layers
    assert len(re.findall(r"\bscan\[", jaxpr)) == 4  # each stack's scan and its transpose in the backward pass


def test_layerdrop_draws_per_layer():
    """Scanned XMEF in training: LayerDrop skips single layers (a skipped layer's slice of the stacked gradient is
    zero), not the whole stack, and different keys skip different layers: the 'dropout' RNG is split per layer."""
    case = CASES["xmef"]
    _, stacked = stored_params(case, scanned(XM))
    model = XMEF(scanned(XM))
    fn = jax.jit(jax.grad(lambda p, k: case.loss(model, p, False, k)))
    grad = fn.lower(stacked, jax.random.PRNGKey(0)).compile(FAST)
    kept = []
    for seed in range(6):
        g = grad(stacked, jax.random.PRNGKey(seed))
        enc = g["encoder"]["encoder"]["layers"]["ffn"]["fc1"]["kernel"]
        dec = g["decoder"]["layers"]["ffn"]["fc1"]["kernel"]
        kept.append(tuple(bool(jnp.any(x[i] != 0)) for x in (enc, dec) for i in range(x.shape[0])))
    assert any(0 < sum(k[:3]) < 3 for k in kept) and any(0 < sum(k[3:]) < 2 for k in kept), kept
    assert len(set(kept)) > 2, kept


def test_lna_masks_select_the_same_parameters():
    shapes = {name: jax.eval_shape(lambda c=c: XMEF(c).init(jax.random.PRNGKey(0), WAVE, WAVE_LENS, TOKENS))["params"]
              for name, c in (("plain", XM), ("scanned", scanned(XM)))}
    for variant in lna.VARIANTS[lna.XMEF]:
        masks = {k: lna.trainable_mask(p, variant, model=lna.XMEF) for k, p in shapes.items()}
        assert count_params(shapes["plain"], masks["plain"]) == count_params(shapes["scanned"], masks["scanned"])
    mask = lna.trainable_mask(shapes["scanned"], "lna-minimalist", model=lna.XMEF)
    layers = mask["decoder"]["layers"]
    assert layers["encoder_attn"]["q_proj"]["kernel"] and layers["final_layer_norm"]["scale"]
    assert not layers["self_attn"]["q_proj"]["kernel"] and not layers["ffn"]["fc1"]["kernel"]


def test_sharding_replicates_the_layer_axis():
    abstract = jax.eval_shape(lambda: S2TTransformer(scanned(S2T)).init(jax.random.PRNGKey(0),
                                                                        *CASES["s2t_shared"].model_inputs))["params"]
    stored = make_plan("bilingual", abstract, LANGS).abstract(abstract)
    axes = shd.param_logical_axes(stored)
    assert shd.param_logical_axes(abstract)["decoder"]["layers"]["self_attn"]["q_proj"]["kernel"] == (
        "layers", "embed", "heads")
    assert axes["decoder"]["layers"]["self_attn"]["q_proj"]["kernel"] == ("copies", "layers", "embed", "heads")
    assert axes["encoder"]["layers"]["final_layer_norm"]["scale"] == ("copies", "layers", "norm")
    mesh = shd.make_mesh(2, 2, 2)
    spec = shd.param_specs(stored, mesh)
    assert tuple(spec["decoder"]["layers"]["self_attn"]["q_proj"]["kernel"]) == (None, None, "fsdp", "tensor")
    assert not [line for line in shd.sharding_report(stored, mesh) if "layers/" in line and "no rule" in line]


def test_translator_serves_scanned_models_per_layer():
    from mlst_jax.translator import Translator

    plain, stacked = stored_params(CASES["xmef"], scanned(XM))
    translator = Translator(scanned(XM), stacked, cmvn="none")
    assert translator.config == XM
    assert max_diff(jax.device_get(translator.params), plain) == 0
    with pytest.raises(ValueError, match="per-layer model"):
        XMEF(scanned(XM)).apply({"params": stacked}, jnp.zeros((2, 3, 16)), method=XMEF.precompute_cross_kv)
