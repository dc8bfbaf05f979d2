"""Checkpoint conversion of scanned models (`scan_layers`: layer stacks stored [L, ...]): exports are byte for byte
those of the per-layer model, and loading back gives the same weights in either layout. No compilation: parameters
are random arrays of the models' shapes."""
import numpy as np
import pytest

from mlst_jax.convert import fairseq, hf, mbart as mbart_convert, wav2vec2 as w2v_convert, xmef as xmef_convert
from mlst_jax.models import joint, mbart, s2t_transformer, wav2vec2, xmef
from mlst_jax.models.params import stack_layers, unstack_layers

S2T = s2t_transformer.S2TConfig(vocab_size=23, d_model=16, encoder_layers=3, decoder_layers=2, encoder_ffn_dim=24,
                                decoder_ffn_dim=24, encoder_attention_heads=2, decoder_attention_heads=2,
                                conv_channels=8, conv_kernel_sizes=(3, 3), input_feat_per_channel=6)
W2V = wav2vec2.named_config("large_lv60", hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                            intermediate_size=24, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
MB = mbart.MBartConfig(vocab_size=29, d_model=16, encoder_layers=2, decoder_layers=3, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=16)
XM = xmef.XMEFConfig(encoder=W2V, decoder=MB, adaptor_layers=2)


def scanned(config):
    if isinstance(config, xmef.XMEFConfig):
        return config.replace(encoder=scanned(config.encoder), decoder=scanned(config.decoder))
    return config.replace(scan_layers=True)


def random_params(abstract, seed=0):
    rng = np.random.default_rng(seed)
    return {k: random_params(v, seed + i + 1) if isinstance(v, dict) else rng.standard_normal(v.shape).astype(v.dtype)
            for i, (k, v) in enumerate(abstract.items())}


def assert_bitwise(a, b):
    flat_a, flat_b = (dict(_flat(t)) for t in (a, b))
    assert sorted(flat_a) == sorted(flat_b)
    for k, x in flat_a.items():
        assert x.dtype == flat_b[k].dtype and np.array_equal(x, flat_b[k]), k


def _flat(tree, prefix=()):
    for k, v in tree.items():
        yield from _flat(v, prefix + (k,)) if isinstance(v, dict) else [(prefix + (k,), np.asarray(v))]


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


# name: (config, abstract params of a config, save(path, config, params), load(path) -> (config, params))
FORMATS = {
    "s2t_hf": (S2T, s2t_transformer.abstract_params, hf.save_hf_speech2text, hf.load_hf_speech2text),
    "s2t_fairseq": (S2T, s2t_transformer.abstract_params, lambda p, c, x: fairseq.save_fairseq_s2t(p / "x.pt", c, x),
                    lambda p: fairseq.load_fairseq_s2t(p / "x.pt")),
    "wav2vec2_hf": (W2V, wav2vec2.abstract_params, w2v_convert.save_hf_wav2vec2, w2v_convert.load_hf_wav2vec2),
    "wav2vec2_ctc_hf": (W2V, lambda c: wav2vec2.abstract_params(c, ctc_head=True), w2v_convert.save_hf_wav2vec2,
                        lambda p: w2v_convert.load_hf_wav2vec2(p, ctc_head=True)),
    "wav2vec2_fairseq": (W2V, wav2vec2.abstract_params,
                         lambda p, c, x: w2v_convert.save_fairseq_wav2vec2(p / "x.pt", c, x),
                         lambda p: w2v_convert.load_fairseq_wav2vec2(p / "x.pt")),
    "mbart_hf": (MB, mbart.abstract_params, mbart_convert.save_hf_mbart, mbart_convert.load_hf_mbart),
    "xmef_hf": (XM, xmef.abstract_params, xmef_convert.save_hf_xmef, xmef_convert.load_hf_xmef),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_scanned_export_and_load_are_bitwise(name, tmp_path):
    if "fairseq" in name:
        pytest.importorskip("torch")
    config, abstract, save, load = FORMATS[name]
    plain = random_params(abstract(config))
    stacked = stack_layers(plain, abstract(scanned(config)))
    assert len(list(_flat(stacked))) < len(list(_flat(plain)))  # one leaf per stack, not per layer
    save(tmp_path / "plain", config, plain)
    save(tmp_path / "scanned", scanned(config), stacked)
    assert _files(tmp_path / "plain") == _files(tmp_path / "scanned")  # weights and config.json, byte for byte
    loaded_config, loaded = load(tmp_path / "scanned")
    assert loaded_config == config  # scan_layers is the run's choice, not the checkpoint's
    assert_bitwise(loaded, plain)
    assert_bitwise(stack_layers(loaded, abstract(scanned(config))), stacked)
    assert_bitwise(unstack_layers(stacked), plain)


def test_xmef_from_pretrained_parts_takes_the_configs_layout():
    enc, dec = random_params(wav2vec2.abstract_params(W2V)), random_params(mbart.abstract_params(MB), seed=7)
    _, plain = xmef_convert.xmef_from_pretrained((W2V, enc), (MB, dec), adaptor_layers=2)
    _, stacked = xmef_convert.xmef_from_pretrained((scanned(W2V), enc), (scanned(MB), dec), adaptor_layers=2)
    assert stacked["encoder"]["encoder"]["layers"]["ffn"]["fc1"]["kernel"].shape == (3, 16, 24)
    assert set(stacked["adaptor"]) == {"layers_0", "layers_1"}  # the length adaptor's convs are not a scanned stack
    assert_bitwise(unstack_layers(stacked), plain)


def test_joint_from_pretrained_takes_the_configs_layout():
    """The joint model scans its speech encoder's own layers and the decoder; the shared layers and the text
    encoder's stay per layer, cut from the mBART encoder as without scanning."""
    xmef_params = random_params(xmef.abstract_params(XM))
    mbart_params = random_params(mbart.abstract_params(MB), seed=3)
    plain = joint.joint_from_pretrained(joint.JointConfig(XM, 2), xmef_params, mbart_params)
    stacked = joint.joint_from_pretrained(joint.JointConfig(scanned(XM), 2), xmef_params, mbart_params)
    assert stacked["encoder"]["encoder"]["layers"]["ffn"]["fc1"]["kernel"].shape == (1, 16, 24)  # 3 - 2 own layers
    assert set(stacked["shared_layers"]) == {"layers_0", "layers_1"}
    assert_bitwise(unstack_layers(stacked), plain)
