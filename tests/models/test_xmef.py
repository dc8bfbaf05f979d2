"""XMEF (wav2vec 2.0 → length adaptor → mBART decoder): parity with HF `SpeechEncoderDecoderModel` (wav2vec2 with
`add_adapter=True` + MBart decoder), padding, beam search with the forced language code, conversion, and the
paper's parameter counts."""
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.convert import load_pretrained
from mlst_jax.convert.xmef import config_from_hf, load_hf_xmef, save_hf_xmef, xmef_from_pretrained
from mlst_jax.decode.beam_search import beam_search
from mlst_jax.finetune import lna
from mlst_jax.models.mbart import MBartConfig
from mlst_jax.models.wav2vec2 import Wav2Vec2Config
from mlst_jax.models.xmef import XMEF, LengthAdaptor, XMEFConfig, abstract_params, init_decode_cache, paper_config
from mlst_jax.models.params import count_params
from torch_reference import MaxDiffs, check_key_error, perturb, variant_fixtures

TOL = 1e-4
MAX_DIFFS = MaxDiffs()
PAD, EOS = 1, 2
LENGTHS = (1700, 1200, 950)
ENCODER = dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, conv_dim=(16, 12, 16),
               conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=6,
               num_conv_pos_embedding_groups=4, add_adapter=True, adapter_kernel_size=3, adapter_stride=2)
DECODER = dict(vocab_size=57, d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=40,
               max_position_embeddings=24, scale_embedding=True, is_decoder=True, add_cross_attention=True)
VARIANTS = {
    # the paper's shape: stable-LN (large) encoder whose width is the decoder's, adaptor convs only; untied head
    # as in HF's wav2vec2-mbart conversions
    "stable": (dict(hidden_size=32, output_hidden_size=32, num_adapter_layers=2, feat_extract_norm="layer",
                    conv_bias=True, do_stable_layer_norm=True), dict(tie_word_embeddings=False)),
    # base encoder narrower than the decoder: HF's projection + LayerNorm before the convs; tied head
    "base_proj": (dict(hidden_size=24, output_hidden_size=32, num_adapter_layers=3, feat_extract_norm="group",
                       do_stable_layer_norm=False), dict(tie_word_embeddings=True)),
}


record = MAX_DIFFS.record
report_diffs = MAX_DIFFS.fixture()


def hf_model(transformers, torch, name, seed=0):
    enc, dec = VARIANTS[name]
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.Wav2Vec2Config(**ENCODER, **enc), transformers.MBartConfig(**DECODER, **dec))
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = EOS, PAD, EOS
    torch.manual_seed(seed)
    return perturb(torch, transformers.SpeechEncoderDecoderModel(config))


def build_case(name, tmp_path_factory):
    """The HF model of variant `name`, saved, converted, and both run on the padded batch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = hf_model(transformers, torch, name)
    path = tmp_path_factory.mktemp(name)
    hf.save_pretrained(path)
    config, params = load_hf_xmef(path)
    rng = np.random.RandomState(0)
    wav = rng.randn(len(LENGTHS), max(LENGTHS)).astype(np.float32)
    for i, n in enumerate(LENGTHS):
        wav[i, n:] = 0.0
    tgt = rng.randint(3, DECODER["vocab_size"], (len(LENGTHS), 6))
    tgt[:, 0] = EOS
    model = XMEF(config)

    def body(m, w, l, t):
        enc, valid = m.encode(w, l)
        return valid, m.decode(t, enc, valid)

    run = jax.jit(lambda p, w, l, t: model.apply({"params": p}, w, l, t, method=body))
    valid, logits = map(np.asarray, run(params, wav, np.array(LENGTHS), tgt))
    with torch.no_grad():
        ref = [hf(input_values=torch.from_numpy(wav[i:i + 1, :n]),
                  decoder_input_ids=torch.from_numpy(tgt[i:i + 1])).logits[0].numpy() for i, n in enumerate(LENGTHS)]
    return types.SimpleNamespace(name=name, torch=torch, transformers=transformers, hf=hf, path=path, config=config,
                                 params=params, model=model, wav=wav, tgt=tgt, run=run, valid=valid, logits=logits,
                                 ref=ref)


build, case = variant_fixtures(build_case, VARIANTS)


@pytest.fixture(scope="module")
def stable(build):
    """The paper-shaped variant alone, for the checks one variant is enough for."""
    return build("stable")


@pytest.fixture(scope="module")
def base_proj(build):
    """The projecting, tied variant alone, for the checks one variant is enough for."""
    return build("base_proj")


@pytest.mark.torch
def test_config_from_hf(case):
    cfg, hf = case.config, case.hf.config
    assert cfg.adaptor_layers == hf.encoder.num_adapter_layers
    assert (cfg.adaptor_kernel_size, cfg.adaptor_stride) == (3, 2)
    assert cfg.adaptor_proj == (hf.encoder.output_hidden_size != hf.encoder.hidden_size)
    assert cfg.decoder.tie_word_embeddings == hf.decoder.tie_word_embeddings
    assert (cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id) == (EOS, PAD, EOS)
    assert XMEFConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.torch
def test_lengths_match_hf(case):
    hf_lengths = case.hf.encoder._get_feat_extract_output_lengths(case.torch.tensor(LENGTHS)).tolist()
    assert case.valid.sum(1).tolist() == hf_lengths == [case.config.output_lengths(n) for n in LENGTHS]
    assert [r.shape[0] for r in case.ref] == [case.tgt.shape[1]] * len(LENGTHS)


@pytest.mark.torch
def test_logits_match_hf_per_utterance(case):
    for i, ref in enumerate(case.ref):
        assert record(f"{case.name}/logits", np.abs(case.logits[i] - ref).max()) <= TOL
    assert np.abs(case.ref[0]).max() > 1.0


@pytest.mark.torch
def test_hf_padded_batch(case):
    """HF on the padded batch agrees on the unpadded row; on padded rows its adaptor (and, for the base encoder, its
    group norm) sees padding, which ours never does (see mlst_jax.models.xmef)."""
    torch = case.torch
    mask = (np.arange(max(LENGTHS))[None] < np.array(LENGTHS)[:, None]).astype(np.int64)
    with torch.no_grad():
        padded = case.hf(input_values=torch.from_numpy(case.wav), attention_mask=torch.from_numpy(mask),
                         decoder_input_ids=torch.from_numpy(case.tgt)).logits.numpy()
    assert record(f"{case.name}/hf_padded_row0", np.abs(case.logits[0] - padded[0]).max()) <= TOL
    assert np.abs(case.logits[1:] - padded[1:]).max() > 1e-3


@pytest.mark.torch
def test_outputs_do_not_depend_on_padding_values(case):
    noisy = case.wav.copy()
    for i, n in enumerate(LENGTHS):
        noisy[i, n:] = np.random.RandomState(i).randn(max(LENGTHS) - n) * 3
    _, logits = case.run(case.params, noisy, np.array(LENGTHS), case.tgt)
    assert record(f"{case.name}/padding_values", np.abs(np.asarray(logits) - case.logits).max()) <= 1e-5


@pytest.mark.torch
def test_beam_search_forces_the_language_code_like_hf_generate(stable):
    torch, cfg, model = stable.torch, stable.config, stable.model
    k, m, tag = 2, 5, 55
    gen = stable.transformers.GenerationConfig(
        num_beams=k, max_new_tokens=m, do_sample=False, early_stopping=True, decoder_start_token_id=EOS,
        forced_bos_token_id=tag, forced_eos_token_id=None, pad_token_id=PAD, eos_token_id=EOS)
    stable.hf.generation_config.forced_eos_token_id = None  # MBart's default would force </s> at max_length
    with torch.no_grad():
        hf = [stable.hf.generate(input_values=torch.from_numpy(stable.wav[i:i + 1, :n]),
                                 generation_config=gen).numpy()[0, 1:] for i, n in enumerate(LENGTHS)]

    @jax.jit
    def search(params):
        enc, valid = model.apply({"params": params}, stable.wav, np.array(LENGTHS), method=XMEF.encode)
        kv = model.apply({"params": params}, enc, method=XMEF.precompute_cross_kv)
        step = lambda tok, cache, i: model.apply({"params": params}, tok, cache, i, kv, valid, method=XMEF.decode_step)
        b = len(LENGTHS)
        return beam_search(step, init_decode_cache(cfg, b * k, m + 1), batch_size=b, beam_size=k, max_len=m,
                           decoder_start_id=cfg.decoder_start_token_id, eos_id=EOS, pad_id=PAD,
                           prefix=jnp.full((b, 1), tag), max_steps=m, hf_compat=True)

    ours = np.asarray(search(stable.params).tokens)[:, 0]
    for row, ref in zip(ours, hf):
        assert row[0] == tag
        np.testing.assert_array_equal(row[:len(ref)], ref)


@pytest.mark.torch
def test_export_round_trip(case, tmp_path):
    save_hf_xmef(tmp_path, case.config, case.params)
    hf, info = case.transformers.SpeechEncoderDecoderModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    state = hf.state_dict()
    for name, p in case.hf.state_dict().items():
        np.testing.assert_array_equal(state[name].numpy(), p.numpy(), err_msg=name)
    model, kind, config, params = load_pretrained(tmp_path)
    assert (model, kind, config) == ("xmef", "hf", case.config)


@pytest.mark.torch
def test_key_errors_name_the_key(case, tmp_path):
    def edit(state):  # one key missing, one unexpected: the error names both
        del state["encoder.adapter.layers.1.conv.weight"]
        state["decoder.model.decoder.layers.0.extra.bias"] = np.zeros(3, np.float32)
        return "encoder.adapter.layers.1.conv.weight"

    err = check_key_error(load_hf_xmef, case.path, tmp_path, edit)
    assert "decoder.model.decoder.layers.0.extra.bias" in str(err)


@pytest.mark.torch
def test_assembled_from_pretrained_parts(base_proj):
    """XMEF from a wav2vec 2.0 encoder and an MBartForConditionalGeneration-style tree (shared embedding)."""
    cfg, p = base_proj.config, base_proj.params
    dec = dict(p["decoder"])
    mbart = {"decoder": dec, "encoder": {}}
    if cfg.decoder.tie_word_embeddings:
        mbart["shared"] = dec.pop("embed_tokens")
    kw = dict(adaptor_layers=cfg.adaptor_layers, adaptor_proj=cfg.adaptor_proj)
    config, params = xmef_from_pretrained((cfg.encoder, p["encoder"]), (cfg.decoder, mbart), p["adaptor"], **kw)
    assert config == cfg
    jax.tree.map(np.testing.assert_array_equal, params, p)
    _, fresh = xmef_from_pretrained((cfg.encoder, p["encoder"]), (cfg.decoder, mbart), seed=1, **kw)
    assert jax.tree.map(np.shape, fresh["adaptor"]) == jax.tree.map(np.shape, p["adaptor"])
    with pytest.raises(ValueError, match="do not fit"):
        xmef_from_pretrained((cfg.encoder, p["encoder"]), (cfg.decoder, mbart), p["adaptor"],
                             **{**kw, "adaptor_layers": cfg.adaptor_layers + 1})


def test_hf_configs_we_cannot_represent_are_refused():
    enc = {"model_type": "wav2vec2", "hidden_size": 32, "output_hidden_size": 16, "add_adapter": True,
           "adapter_kernel_size": 3}
    d = {"model_type": "speech-encoder-decoder", "encoder": enc, "decoder": {"model_type": "mbart", "d_model": 32}}
    with pytest.raises(ValueError, match="enc_to_dec_proj"):
        config_from_hf(d)
    with pytest.raises(ValueError, match="adapter_kernel_size=5"):
        config_from_hf({**d, "encoder": {**enc, "adapter_kernel_size": 5}})
    with pytest.raises(ValueError, match="'wav2vec2'/'mbart'"):
        config_from_hf({**d, "decoder": {"model_type": "bart"}})


def test_paper_config_has_793m_parameters_without_allocation():
    params = abstract_params(paper_config())
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))
    sizes = {k: count_params(v) for k, v in params.items()}
    assert sizes == {"encoder": 315_438_720, "adaptor": 18_880_512, "decoder": 458_670_080}
    assert count_params(params) == 792_989_312  # the paper's "793.0M"
    assert paper_config().output_lengths(16000 * 5) == 32  # 5 s: 249 wav2vec2 frames → 125 → 63 → 32


def test_adaptor_layer_norm():
    """fairseq's `Conv1dAdaptor(layernorm=True)`: `adaptor_layer_norm` adds one LayerNorm over the encoder width
    (fairseq's `in_dim`; the paper's d = 1024 = H) on the adaptor input, trained with the adaptor."""
    enc, dec = VARIANTS["base_proj"]
    enc = Wav2Vec2Config.from_dict({**ENCODER, **enc})  # H = 24, narrower than the decoder: the norm is over H
    plain = XMEFConfig(encoder=enc, decoder=MBartConfig.from_dict({**DECODER, **dec}), adaptor_layers=2)
    cfg = plain.replace(adaptor_layer_norm=True)
    h = enc.hidden_size
    assert h != cfg.decoder.d_model

    def shapes(tree):
        return {"/".join(k.key for k in path): x.shape for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

    abstract, abstract_plain = abstract_params(cfg), abstract_params(plain)
    assert shapes(abstract) == {**shapes(abstract_plain), "adaptor/layer_norm/scale": (h,),
                                "adaptor/layer_norm/bias": (h,)}
    assert count_params(abstract) - count_params(abstract_plain) == 2 * h

    # finetuning: the norm belongs to the adaptor, which every variant but `none` trains
    assert lna.side_of(("adaptor", "layer_norm", "scale"), lna.XMEF) == lna.ADAPTOR
    for variant, trained in (("lna-minimalist", True), ("lna-minimalist-no-ln", True), ("none", False)):
        mask = lna.trainable_mask(abstract, variant)
        assert mask["adaptor"]["layer_norm"] == {"scale": trained, "bias": trained}, variant
        grown = count_params(abstract, mask) - count_params(abstract_plain, lna.trainable_mask(abstract_plain,
                                                                                                      variant))
        assert grown == (2 * h if trained else 0), variant

    rng = np.random.RandomState(0)
    params = jax.tree.map(lambda x: (rng.randn(*x.shape) * 0.3).astype(np.float32), abstract)
    params["adaptor"]["layer_norm"] = {"scale": (1 + 0.5 * rng.randn(h)).astype(np.float32),
                                       "bias": (0.3 * rng.randn(h)).astype(np.float32)}
    lens = np.array(LENGTHS)
    wav = rng.randn(len(LENGTHS), max(LENGTHS)).astype(np.float32)
    noisy = wav.copy()
    for i, n in enumerate(LENGTHS):
        wav[i, n:] = 0.0
        noisy[i, n:] *= 3

    model = XMEF(cfg)
    encode = jax.jit(lambda p, w, l: model.apply({"params": p}, w, l, method=XMEF.encode))
    encoder = jax.jit(lambda p, w, l: model.apply({"params": p}, w, l, method=lambda m, w, l: m.encoder(w, l)))

    @jax.jit
    def adaptor(x, lengths):  # without the norm
        p = {k: v for k, v in params["adaptor"].items() if k != "layer_norm"}
        return LengthAdaptor(plain).apply({"params": p}, x, lengths)[0]

    enc_out, enc_valid = map(np.asarray, encoder(params, wav, lens))
    out, valid = map(np.asarray, encode(params, wav, lens))
    x = enc_out.astype(np.float64)
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)  # torch's LayerNorm epsilon
    x = x * params["adaptor"]["layer_norm"]["scale"] + params["adaptor"]["layer_norm"]["bias"]
    ref = np.asarray(adaptor(x.astype(np.float32), enc_valid.sum(-1)))
    assert valid.sum(1).tolist() == [cfg.output_lengths(n) for n in LENGTHS]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert np.abs(np.asarray(adaptor(enc_out, enc_valid.sum(-1))) - out).max() > 1e-2  # the norm is applied

    # padding still never changes valid outputs: padded rows equal their utterance alone (the norm makes padded
    # encoder frames nonzero, the adaptor zeroes them; rows 1 and 2 have an odd frame count before conv 1 and 2,
    # where a conv window reaches past the end; noisy padding alone cannot show this, as wav2vec 2.0's padded
    # frames do not depend on the padding values), and padding values do not matter
    for i in (1, 2):
        alone = np.asarray(encode(params, wav[i:i + 1, :LENGTHS[i]], lens[i:i + 1])[0])[0]
        assert len(alone) == valid[i].sum() < out.shape[1]
        np.testing.assert_allclose(out[i, :len(alone)], alone, rtol=0, atol=1e-5 * np.abs(out).max())
    noisy_out = np.asarray(encode(params, noisy, lens)[0])
    np.testing.assert_allclose(noisy_out[valid], out[valid], rtol=0, atol=1e-5 * np.abs(out).max())
