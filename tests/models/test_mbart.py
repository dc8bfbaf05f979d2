"""mBART: parity with HF `MBartForConditionalGeneration` (tied / untied, final_logits_bias), KV-cache decoding,
checkpoint conversion, mBART-50 language codes and the paper's decoder size."""
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.convert import load_pretrained
from mlst_jax.convert.mbart import load_hf_mbart, save_hf_mbart
from mlst_jax.models.mbart import (MBART50_LANG_CODES, MBart, MBartConfig, abstract_decoder_params, init_decode_cache, mbart50_code, mbart50_lang_id)
from mlst_jax.models.params import count_params
from torch_reference import MaxDiffs, check_key_error, perturb, variant_fixtures

TOL = 1e-4
MAX_DIFFS = MaxDiffs()
PAD, EOS = 1, 2
TINY = dict(vocab_size=61, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=2, encoder_ffn_dim=40, decoder_ffn_dim=44, max_position_embeddings=24)
VARIANTS = {
    # mBART-50 style: scaled, tied embeddings; a non-zero final_logits_bias to exercise it
    "tied": dict(scale_embedding=True, tie_word_embeddings=True, activation_function="gelu"),
    # untied output projection (and separate encoder/decoder embeddings, as transformers v5 has them)
    "untied": dict(scale_embedding=False, tie_word_embeddings=False, activation_function="relu"),
}


record = MAX_DIFFS.record
report_diffs = MAX_DIFFS.fixture()


def build_case(name, tmp_path_factory):
    """The HF model of variant `name`, saved, converted, and both run on a padded batch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(len(name))
    hf = perturb(torch, transformers.MBartForConditionalGeneration(
        transformers.MBartConfig(**TINY, **VARIANTS[name])))
    if name == "tied":
        with torch.no_grad():
            hf.final_logits_bias.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp(name)
    hf.save_pretrained(path)
    config, params = load_hf_mbart(path)
    rng = np.random.RandomState(0)
    src = rng.randint(3, TINY["vocab_size"], (3, 9))
    src[1, 6:], src[2, 4:] = PAD, PAD
    tgt = rng.randint(3, TINY["vocab_size"], (3, 7))
    tgt[:, 0] = EOS
    tgt[2, 5:] = PAD
    model = MBart(config)

    def body(m, s, t):
        enc, valid = m.encode(s)
        return enc, valid, m.decode(t, enc, valid)

    run = jax.jit(lambda p, s, t: model.apply({"params": p}, s, t, method=body))
    enc, valid, logits = map(np.asarray, run(params, src, tgt))
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(src), attention_mask=torch.from_numpy((src != PAD).astype(np.int64)),
                 decoder_input_ids=torch.from_numpy(tgt))
    return types.SimpleNamespace(name=name, torch=torch, transformers=transformers, hf=hf, path=path, config=config,
                                 params=params, model=model, src=src, tgt=tgt, enc=enc, valid=valid, logits=logits,
                                 ref_enc=ref.encoder_last_hidden_state.numpy(), ref_logits=ref.logits.numpy())


build, case = variant_fixtures(build_case, VARIANTS)


@pytest.fixture(scope="module")
def tied(build):
    """The tied variant alone, for the checks one variant is enough for."""
    return build("tied")


@pytest.mark.torch
def test_config_and_tree(case):
    hf = case.hf.config
    for field in ("vocab_size", "d_model", "decoder_ffn_dim", "decoder_attention_heads", "scale_embedding",
                  "tie_word_embeddings", "activation_function", "max_position_embeddings"):
        assert getattr(case.config, field) == getattr(hf, field), field
    assert case.config.add_final_logits_bias == (case.name == "tied")  # an all-zero bias is dropped
    assert ("shared" in case.params) == case.config.tie_word_embeddings
    assert ("lm_head" in case.params["decoder"]) == (not case.config.tie_word_embeddings)
    assert MBartConfig.from_dict(case.config.to_dict()) == case.config


@pytest.mark.torch
def test_logits_match_hf(case):
    for i in range(len(case.src)):
        n, t = int(case.valid[i].sum()), int((case.tgt[i] != PAD).sum())
        assert record(f"{case.name}/encoder", np.abs(case.enc[i, :n] - case.ref_enc[i, :n]).max()) <= TOL
        assert record(f"{case.name}/logits", np.abs(case.logits[i, :t] - case.ref_logits[i, :t]).max()) <= TOL
    assert np.abs(case.ref_logits).max() > 1.0  # the comparison is not between near-zero numbers


@pytest.mark.torch
def test_incremental_decoding_matches_teacher_forcing(case):
    """KV-cache steps equal teacher forcing (beam search over `decode_step` is checked against HF in test_xmef)."""
    cfg, model = case.config, case.model

    @jax.jit
    def incremental(params):
        enc, valid = model.apply({"params": params}, case.src, method=MBart.encode)
        kv = model.apply({"params": params}, enc, method=MBart.precompute_cross_kv)

        def step(cache, inputs):
            token, i = inputs
            logits, cache = model.apply({"params": params}, token, cache, i, kv, valid, method=MBart.decode_step)
            return cache, logits

        cache = init_decode_cache(cfg, case.src.shape[0], case.tgt.shape[1])
        _, logits = jax.lax.scan(step, cache, (jnp.asarray(case.tgt.T), jnp.arange(case.tgt.shape[1])))
        return jnp.swapaxes(logits, 0, 1)

    inc = np.asarray(incremental(case.params))
    for i in range(len(case.src)):
        t = int((case.tgt[i] != PAD).sum())
        assert record(f"{case.name}/incremental", np.abs(inc[i, :t] - case.logits[i, :t]).max()) <= 1e-5


@pytest.mark.torch
def test_export_round_trip(case, tmp_path):
    save_hf_mbart(tmp_path, case.config, case.params)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "mbart"
    hf, info = case.transformers.MBartForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    state = hf.state_dict()
    for name, p in case.hf.state_dict().items():
        if name == "model.shared.weight" and not case.config.tie_word_embeddings:
            continue  # unused by an untied v5 model; we write the encoder's embedding there
        np.testing.assert_array_equal(state[name].numpy(), p.numpy(), err_msg=name)
    model, kind, config, params = load_pretrained(tmp_path)
    assert (model, kind, config) == ("mbart", "hf", case.config)
    jax.tree.map(np.testing.assert_array_equal, params, case.params)


@pytest.mark.torch
@pytest.mark.parametrize("edit", ["delete", "add", "reshape", "untie"])
def test_key_errors_name_the_key(tied, tmp_path, edit):
    def untie(state):  # a tied alias that differs from the shared embedding
        state["model.decoder.embed_tokens.weight"] = state["model.shared.weight"] + 1
        return "model.decoder.embed_tokens.weight"

    check_key_error(load_hf_mbart, tied.path, tmp_path, untie if edit == "untie" else edit,
                    key="model.decoder.layers.1.encoder_attn.k_proj.weight", added="model.decoder.layers.1.extra.weight")


def test_mbart50_language_codes():
    assert len(MBART50_LANG_CODES) == len(set(MBART50_LANG_CODES)) == 52
    assert MBART50_LANG_CODES[:4] == ("ar_AR", "cs_CZ", "de_DE", "en_XX")
    assert [mbart50_code(x) for x in ("de", "pt", "EN", "ro-RO", "zh_cn", "sl")] == \
        ["de_DE", "pt_XX", "en_XX", "ro_RO", "zh_CN", "sl_SI"]
    assert mbart50_lang_id("en") == 250004 and mbart50_lang_id("sl_SI") == 250052  # `<mask>` is 250053
    with pytest.raises(ValueError, match="no mBART-50 language code for 'xx'"):
        mbart50_code("xx")


@pytest.mark.torch
def test_language_codes_match_transformers():
    tok = pytest.importorskip("transformers.models.mbart50.tokenization_mbart50")
    assert list(MBART50_LANG_CODES) == tok.FAIRSEQ_LANGUAGE_CODES


def test_mbart50_decoder_has_the_papers_458_67m_parameters():
    params = abstract_decoder_params(MBartConfig())
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))
    d, ffn, v, layers = 1024, 4096, 250054, 12
    attn, ln = 4 * (d * d + d), 2 * d
    layer = 2 * attn + 3 * ln + (d * ffn + ffn) + (ffn * d + d)
    assert count_params(params) == v * d + (1024 + 2) * d + ln + layers * layer + ln == 458_670_080


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by encoder_attention_heads=16"):
        MBartConfig(d_model=30)
    with pytest.raises(ValueError, match="unknown activation"):
        MBartConfig(activation_function="tanhh")
