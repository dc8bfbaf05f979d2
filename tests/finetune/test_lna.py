"""Trainable-parameter masks: the LNA variants of seed 001 (XMEF) and the seed 000 baselines (S2T)."""
import jax
import pytest

from mlst_jax.models.params import count_params
from mlst_jax.finetune import lna
from mlst_jax.models.s2t_transformer import S2TConfig, abstract_params, named_config
from mlst_jax.sharing.plan import CopyTable, SharingPlan

import xmef_trees as xt

# Trained parameters at the paper's full-size XMEF (the table in lna.py and docs/finetuning.md).
XMEF_COUNTS = {
    "all": 792_989_312, "lna-e": 578_420_736, "lna-d": 384_777_856, "lna-ed": 170_209_280,
    "lna-minimalist": 69_447_680, "lna-minimalist-no-ln": 69_261_312, "lna-minimalist-no-ea": 19_066_880,
    "lna-minimalist+sa-dec": 119_828_480, "lna-minimalist+sa-enc": 170_209_280, "none": 0,
}
# Seed 001's printed sizes (Tables 1–7), in millions.
PAPER_M = {"all": 793.0, "lna-d": 384.8, "lna-minimalist": 69.4, "lna-minimalist-no-ln": 69.3,
           "lna-minimalist-no-ea": 19.0, "lna-minimalist+sa-dec": 119.8, "lna-minimalist+sa-enc": 170.2}


@pytest.mark.parametrize("style", ["hf", "fairseq"])
@pytest.mark.parametrize("nested", [True, False])
def test_xmef_counts_at_the_paper_config(style, nested):
    params = xt.xmef(style, nested)
    assert lna.detect_model(params) == "xmef"
    assert lna.trainable_counts(params) == XMEF_COUNTS
    for variant, millions in PAPER_M.items():  # −EA: 19.07M against the printed 19.0M
        assert abs(XMEF_COUNTS[variant] / 1e6 - millions) < 0.075, variant


def test_xmef_paper_discrepancies_are_what_the_docs_say():
    params = xt.xmef()
    decoder_and_adaptor = count_params(xt.mbart_decoder()) + count_params(xt.adaptor())
    assert round(decoder_and_adaptor / 1e6, 1) == 477.6  # the paper's LNA-E figure
    feature_projection = 512 * 1024 + 1024
    assert round((XMEF_COUNTS["lna-ed"] + feature_projection) / 1e6, 1) == 170.7  # Tables 1–5's LNA-E,D
    assert count_params(params) == XMEF_COUNTS["all"]


def _trained(params, variant, model=None):
    mask = lna.trainable_mask(params, variant, model)
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    return {"/".join(str(k.key) for k in p) for p, f in flat if f}


def test_xmef_minimalist_leaf_by_leaf():
    trained = _trained(xt.xmef("hf"), "lna-minimalist")
    assert "encoder/encoder/layers_3/layer_norm/scale" in trained
    assert "encoder/encoder/layers_3/final_layer_norm/bias" in trained
    assert "encoder/encoder/layer_norm/scale" in trained
    assert "encoder/feature_projection/layer_norm/scale" in trained
    assert "encoder/feature_extractor/conv_layers_2/layer_norm/scale" in trained
    assert "adapter/layers_1/conv/kernel" in trained
    assert "decoder/layernorm_embedding/scale" in trained
    assert "decoder/layers_0/encoder_attn/k_proj/kernel" in trained
    assert "decoder/layers_0/encoder_attn_layer_norm/scale" in trained
    assert "decoder/layers_0/self_attn_layer_norm/scale" in trained
    for frozen in ("encoder/encoder/layers_3/attention/q_proj/kernel", "encoder/feature_projection/projection/kernel",
                   "encoder/encoder/pos_conv_embed/weight_v", "encoder/masked_spec_embed",
                   "encoder/feature_extractor/conv_layers_0/conv/kernel", "decoder/layers_0/self_attn/q_proj/kernel",
                   "decoder/layers_0/fc1/kernel", "decoder/embed_tokens/embedding",
                   "decoder/embed_positions/embedding"):
        assert frozen not in trained, frozen
    sa_dec = _trained(xt.xmef("hf"), "lna-minimalist+sa-dec") - trained
    assert sa_dec and all("/self_attn/" in n and n.startswith("decoder/") for n in sa_dec)
    sa_enc = _trained(xt.xmef("hf"), "lna-minimalist+sa-enc") - trained
    assert sa_enc and all("/attention/" in n and n.startswith("encoder/") for n in sa_enc)
    assert _trained(xt.xmef("hf"), "lna-ed") == _trained(xt.xmef("hf"), "lna-minimalist+sa-enc")


def test_xmef_top_level_decoder_names():
    params = {**xt.xmef(), "shared": {"embedding": xt._s(8, 4)}, "lm_head": {"kernel": xt._s(4, 8)}}
    trained = _trained(params, "lna-e")  # decoder: all
    assert {"shared/embedding", "lm_head/kernel"} <= trained
    assert not {"shared/embedding", "lm_head/kernel"} & _trained(params, "lna-d")


def test_rules_fail_loudly():
    no_ea = xt.xmef()
    for layer in no_ea["decoder"].values():
        if isinstance(layer, dict):
            layer.pop("encoder_attn", None)
    with pytest.raises(ValueError, match="decoder part 'ea' matches no parameter"):
        lna.trainable_mask(no_ea, "lna-d")
    lna.trainable_mask(no_ea, "lna-minimalist-no-ea")  # needs no EA

    no_adaptor = {k: v for k, v in xt.xmef().items() if k != "adapter"}
    with pytest.raises(ValueError, match="no length-adaptor parameters"):
        lna.trainable_mask(no_adaptor, "lna-minimalist")
    no_decoder = {k: v for k, v in xt.xmef().items() if k != "decoder"}
    with pytest.raises(ValueError, match="no decoder parameters"):
        lna.trainable_mask(no_decoder, "all")
    with pytest.raises(ValueError, match="unknown xmef finetuning variant 'lna-x'; known: all, lna-e"):
        lna.trainable_mask(xt.xmef(), "lna-x")
    with pytest.raises(ValueError, match="cannot tell the model"):
        lna.trainable_mask({"foo": {"kernel": xt._s(2, 2)}}, "all")
    with pytest.raises(ValueError, match="known parts are ln, sa, ea"):
        lna.Variant({"ffn"}, "all")


def test_custom_variant():
    enc_ln_only = lna.Variant({"ln"}, frozenset(), adaptor=False)
    assert lna.trainable_counts(xt.xmef(), []) == {}
    n = count_params(xt.xmef(), lna.trainable_mask(xt.xmef(), enc_ln_only))
    assert n == 24 * 4096 + 2048 + 1024 + 7 * 1024


# -- S2T Transformer -------------------------------------------------------------------------------------------

S2T_PAPER = named_config("s2t_transformer_m", vocab_size=10000, tie_word_embeddings=False)
TINY = S2TConfig(vocab_size=24, d_model=16, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=32,
                 decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=16,
                 input_feat_per_channel=8)


def test_s2t_counts_at_the_paper_config():
    params = abstract_params(S2T_PAPER)
    assert lna.trainable_counts(params) == {"all": 76_327_936, "lna-e": 48_098_304, "lna-d": 47_185_920,
                                            "lna-ed": 18_956_288, "none": 0}


def test_s2t_masks_leaf_by_leaf():
    params = abstract_params(TINY)
    assert lna.detect_model(params) == "s2t"
    e, d, ed = (_trained(params, v) for v in ("lna-e", "lna-d", "lna-ed"))
    assert ed == (e & d)
    assert "encoder/layers_1/self_attn/q_proj/kernel" in ed
    assert "encoder/layers_1/self_attn_layer_norm/scale" in ed
    assert "encoder/layer_norm/scale" in ed and "decoder/layer_norm/bias" in ed
    assert "decoder/layers_0/encoder_attn/v_proj/bias" in ed
    assert "decoder/layers_0/final_layer_norm/scale" in ed
    for frozen in ("encoder/conv/conv_layers_0/kernel", "encoder/layers_0/ffn/fc1/kernel",
                   "decoder/layers_0/self_attn/q_proj/kernel", "decoder/layers_0/ffn/fc2/kernel",
                   "decoder/embed_tokens/embedding", "decoder/lm_head/kernel"):
        assert frozen not in ed, frozen
    assert "decoder/lm_head/kernel" in e and "decoder/layers_0/self_attn/q_proj/kernel" in e
    assert "encoder/conv/conv_layers_0/kernel" in d and "encoder/conv/conv_layers_0/kernel" not in e
    assert _trained(params, "none") == set()
    with pytest.raises(ValueError, match="no bottleneck adapters"):
        lna.trainable_mask(params, "adapters")


def test_s2t_adapters_mask_and_plan_layout():
    params = abstract_params(TINY.replace(adapter_dim=4))
    adapters = _trained(params, "adapters")
    assert adapters and all("/adapter/" in n for n in adapters)
    assert len(adapters) == (2 + 2) * 6  # per layer: layer_norm, fc1, fc2 (kernel / scale and bias)
    assert not adapters & _trained(params, "lna-ed")  # LNA never trains adapter LayerNorms
    assert adapters <= _trained(params, "all")
    # a mask computed on stored (per-language) parameters is the same pytree of flags
    plan = SharingPlan.from_units(params, ("de", "fr"), lambda u: CopyTable.separate(2) if "adapter" in u else None)
    stored = plan.abstract(params)
    assert (jax.tree.leaves(lna.trainable_mask(stored, "adapters"))
            == jax.tree.leaves(lna.trainable_mask(params, "adapters")))
    assert count_params(stored, lna.trainable_mask(stored, "adapters")) == 2 * count_params(
        params, lna.trainable_mask(params, "adapters"))
