"""Bottleneck adapters in the S2T Transformer (seed 000's Adapter baseline) and their per-language plan."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.sharing.strategies import adapter_plan
from mlst_jax.convert.hf import config_to_hf, save_hf_speech2text
from mlst_jax.finetune import adapters as ad
from mlst_jax.models.s2t_transformer import (S2TConfig, S2TTransformer, abstract_params, init_decode_cache, named_config)
from mlst_jax.models.params import count_params

LANGS = ("de", "es", "fr", "it", "nl", "pt", "ro", "ru")
PAPER = named_config("s2t_transformer_m", vocab_size=10000, tie_word_embeddings=False)
TINY = S2TConfig(vocab_size=24, d_model=16, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=32,
                 decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=16,
                 input_feat_per_channel=8, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def test_adapter_baseline_size_at_the_paper_config():
    assert ad.adapter_size(512, 512) == 526_336
    # 18 layers × 8 languages × one adapter: 76,327,936 + 75,792,384 (seed 000 prints 153.1M)
    assert ad.adapter_model_size(PAPER.replace(adapter_dim=512), LANGS) == 152_120_320
    # Le et al.'s released recipe (adapter dim 256, "8 x 4.8M" trainable), the row seed 000 quotes
    assert ad.adapter_model_size(PAPER.replace(adapter_dim=256), LANGS) == 114_334_720
    base = abstract_params(PAPER.replace(adapter_dim=512))
    assert count_params(base) == 76_327_936 + 18 * 526_336
    assert len(ad.adapter_units(base)) == 18 * 3


def test_adapter_dim_zero_is_the_plain_model():
    plain = abstract_params(TINY)
    with_adapters = abstract_params(TINY.replace(adapter_dim=4))
    assert not ad.has_adapters(plain)
    shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
    assert shapes(ad.strip_adapters(with_adapters)) == shapes(plain)
    assert S2TConfig.from_dict(TINY.replace(adapter_dim=4).to_dict()).adapter_dim == 4
    assert "adapter_dim" not in config_to_hf(TINY)
    with pytest.raises(ValueError, match="adapter_dim=-1 must be >= 0"):
        TINY.replace(adapter_dim=-1)


@functools.lru_cache(maxsize=None)
def _forward(cfg):
    return jax.jit(lambda p, *a: S2TTransformer(cfg).apply({"params": p}, *a))


def _apply(cfg, params, *args):
    return _forward(cfg)(params, *args)


def _inputs():
    rng = np.random.default_rng(0)
    feats = jnp.asarray(rng.normal(size=(2, 20, 8)), jnp.float32)
    lens = jnp.asarray([20, 13])
    tokens = jnp.asarray([[2, 5, 7, 9], [2, 4, 1, 1]])
    return feats, lens, tokens


@pytest.fixture(scope="module")
def models():
    feats, lens, tokens = _inputs()
    base = jax.jit(S2TTransformer(TINY).init)(jax.random.PRNGKey(0), feats, lens, tokens)["params"]
    cfg = TINY.replace(adapter_dim=4)
    params = ad.add_adapters(base, cfg, jax.random.PRNGKey(1))
    return base, cfg, params


def test_new_adapters_leave_outputs_unchanged(models):
    base, cfg, params = models
    feats, lens, tokens = _inputs()
    ref = _apply(TINY, base, feats, lens, tokens)
    out = _apply(cfg, params, feats, lens, tokens)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    # incremental decoding goes through the adapters too
    def first_step(model):
        enc, valid = model.encode(feats, lens)
        kv = model.precompute_cross_kv(enc)
        return model.decode_step(tokens[:, 0], init_decode_cache(cfg, 2, 4), 0, kv, valid)[0]
    logits = jax.jit(lambda p: S2TTransformer(cfg).apply({"params": p}, method=first_step))(params)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref[:, 0]), atol=1e-5)
    with pytest.raises(ValueError, match="already have adapters"):
        ad.add_adapters(params, cfg, jax.random.PRNGKey(1))


@pytest.mark.parametrize("side", ["encoder", "decoder"])
def test_adapters_are_in_the_forward_pass(models, side):
    _, cfg, params = models
    feats, lens, tokens = _inputs()
    ref = _apply(cfg, params, feats, lens, tokens)
    noise = lambda x: 0.5 * jax.random.normal(jax.random.PRNGKey(x.size), x.shape)
    bumped = jax.tree_util.tree_map_with_path(
        lambda p, x: x + noise(x) if p[0].key == side and "adapter" in str(p) and p[-1].key == "kernel" else x,
        params)
    out = _apply(cfg, bumped, feats, lens, tokens)
    assert float(jnp.max(jnp.abs(out - ref))) > 1e-3


def test_adapter_plan_makes_adapters_language_specific(models):
    _, cfg, params = models
    plan = adapter_plan(params, ("de", "fr", "ru"))
    split = {u for u, t in plan.units().items() if t.num_copies > 1}
    assert split == set(ad.adapter_units(params)) and len(split) == 4 * 3
    assert all(t.copy_of == (0, 1, 2) for u, t in plan.units().items() if u in split)
    n_adapter = sum(x.size for x in jax.tree.leaves(params)) - sum(x.size for x in jax.tree.leaves(
        ad.strip_adapters(params)))
    assert plan.num_params(params) == sum(x.size for x in jax.tree.leaves(params)) + 2 * n_adapter
    stored = plan.expand(params)
    stored = jax.tree_util.tree_map_with_path(  # make the French copies differ
        lambda p, x, t: x.at[1].add(jax.random.normal(jax.random.PRNGKey(1), x.shape[1:]))
        if t.num_copies > 1 and p[-1].key == "kernel" else x, stored, plan.tables)
    feats, lens, tokens = _inputs()
    run = lambda lang: _apply(cfg, plan.view(stored, lang), feats, lens, tokens)
    de, fr, ru = run("de"), run("fr"), run("ru")
    np.testing.assert_array_equal(np.asarray(de), np.asarray(ru))
    assert float(jnp.max(jnp.abs(de - fr))) > 1e-3
    with pytest.raises(ValueError, match="have no adapters"):
        adapter_plan(ad.strip_adapters(params), ("de", "fr"))


def test_checkpoint_converters_refuse_adapters(models, tmp_path):
    base, cfg, params = models
    with pytest.raises(ValueError, match="bottleneck adapters.*strip_adapters"):
        save_hf_speech2text(tmp_path / "hf", cfg, params)
    with pytest.raises(ValueError, match="bottleneck adapters"):
        config_to_hf(cfg)
    save_hf_speech2text(tmp_path / "hf", TINY, ad.strip_adapters(params))  # the base model exports
