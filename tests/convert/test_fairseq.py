"""fairseq S2T checkpoints: loading (args / cfg variants), export, errors, and conversion to HF."""
import argparse
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mlst_jax.convert import convert, detect_kind, load_checkpoint  # noqa: E402
from mlst_jax.convert.fairseq import load_fairseq_s2t, save_fairseq_s2t  # noqa: E402
from mlst_jax.convert.hf import load_hf_speech2text  # noqa: E402
from mlst_jax.models.s2t_transformer import S2TTransformer  # noqa: E402

pytestmark = pytest.mark.torch

HF_KW = {
    "tied": dict(vocab_size=29, d_model=24, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=2, encoder_ffn_dim=40, decoder_ffn_dim=36, conv_kernel_sizes=(5, 5),
                 num_conv_layers=2, conv_channels=20, input_feat_per_channel=40, tie_word_embeddings=True,
                 dropout=0.15, attention_dropout=0.05, activation_dropout=0.1),
    "untied": dict(vocab_size=31, d_model=20, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                   decoder_attention_heads=4, encoder_ffn_dim=30, decoder_ffn_dim=30, conv_kernel_sizes=(3, 5, 3),
                   num_conv_layers=3, conv_channels=16, input_feat_per_channel=40, tie_word_embeddings=False,
                   dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, scale_embedding=False),
}


def fairseq_state(hf_state: dict) -> dict:
    """HF state dict → fairseq names, with fairseq's buffers."""
    out = {}
    for key, value in hf_state.items():
        if "embed_positions" in key:
            continue
        key = key.removeprefix("model.")
        key = key.replace("encoder.conv.", "encoder.subsample.")
        key = key.replace("encoder.layers.", "encoder.transformer_layers.")
        out["decoder.output_projection.weight" if key == "lm_head.weight" else key] = value
    out.setdefault("decoder.output_projection.weight", out["decoder.embed_tokens.weight"])
    out["encoder.embed_positions._float_tensor"] = torch.zeros(1)
    out["decoder.embed_positions._float_tensor"] = torch.zeros(1)
    out["decoder.version"] = torch.tensor([3.0])
    return out


def fairseq_args(c) -> argparse.Namespace:
    """fairseq args for an HF config, written out by hand."""
    return argparse.Namespace(
        arch="s2t_transformer", task="speech_to_text", encoder_embed_dim=c.d_model, decoder_embed_dim=c.d_model,
        encoder_ffn_embed_dim=c.encoder_ffn_dim, decoder_ffn_embed_dim=c.decoder_ffn_dim,
        encoder_layers=c.encoder_layers, decoder_layers=c.decoder_layers,
        encoder_attention_heads=c.encoder_attention_heads, decoder_attention_heads=c.decoder_attention_heads,
        conv_kernel_sizes=",".join(map(str, c.conv_kernel_sizes)), conv_channels=c.conv_channels,
        input_feat_per_channel=c.input_feat_per_channel, input_channels=1, max_source_positions=6000,
        max_target_positions=1024, share_decoder_input_output_embed=c.tie_word_embeddings, dropout=c.dropout,
        attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout, activation_fn="relu",
        no_scale_embedding=not c.scale_embedding, encoder_normalize_before=True, decoder_normalize_before=True,
        lr=[0.002], seed=1)


@pytest.fixture(scope="module", params=sorted(HF_KW))
def case(request, tmp_path_factory):
    torch.manual_seed(7)
    hf = transformers.Speech2TextForConditionalGeneration(transformers.Speech2TextConfig(**HF_KW[request.param]))
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.normal_(1.0 if "layer_norm" in name else 0.0, 0.2 if p.ndim == 1 else 0.3)
    hf.eval()
    root = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(root / "hf")
    config, params = load_hf_speech2text(root / "hf")
    state = fairseq_state(hf.state_dict())
    torch.save({"args": fairseq_args(hf.config), "model": state, "optimizer_history": [{"num_updates": 5}],
                "extra_state": {"epoch": 3}}, root / "checkpoint_best.pt")
    return types.SimpleNamespace(hf=hf, root=root, config=config, params=params, state=state)


def assert_same_params(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)


def test_args_checkpoint_matches_hf(case):
    config, params = load_fairseq_s2t(case.root / "checkpoint_best.pt")
    assert config == case.config
    assert_same_params(params, case.params)
    model = S2TTransformer(config)
    feats = np.random.RandomState(0).randn(2, 23, config.input_feat_per_channel).astype(np.float32)
    tokens = np.array([[2, 5, 6, 7], [2, 8, 9, 1]])
    fwd = jax.jit(lambda p: model.apply({"params": p}, feats, jnp.array([23, 17]), tokens))
    np.testing.assert_array_equal(np.asarray(fwd(params)), np.asarray(fwd(case.params)))


@pytest.mark.parametrize("container", ["namespace", "dict"])
def test_cfg_checkpoint(case, tmp_path, container):
    args = fairseq_args(case.hf.config)
    model_cfg = args if container == "namespace" else vars(args)
    torch.save({"args": None, "cfg": {"model": model_cfg, "task": {"_name": "speech_to_text"}},
                "model": case.state}, tmp_path / "x.pt")
    config, params = load_fairseq_s2t(tmp_path / "x.pt")
    assert config == case.config
    assert_same_params(params, case.params)


def test_omegaconf_cfg_needs_trust_pickle(case, tmp_path):
    """fairseq >= 0.10 pickles `cfg` as an omegaconf DictConfig: refused by default, loaded when trusted."""
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"model": {k: v for k, v in vars(fairseq_args(case.hf.config)).items()
                                                if v is not None}, "task": {"_name": "speech_to_text"}})
    torch.save({"args": None, "cfg": cfg, "model": case.state}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_fairseq_s2t(tmp_path / "x.pt")
    config, params = load_fairseq_s2t(tmp_path / "x.pt", trust_pickle=True)
    assert config == case.config
    assert_same_params(params, case.params)


def test_save_round_trip(case, tmp_path):
    save_fairseq_s2t(tmp_path / "out.pt", case.config, case.params)
    ckpt = torch.load(tmp_path / "out.pt", weights_only=False)
    assert set(ckpt["model"]) == {k for k in case.state if "_float_tensor" not in k and "version" not in k}
    config, params = load_fairseq_s2t(tmp_path / "out.pt")
    assert config == case.config
    assert_same_params(params, case.params)


def test_convert_to_hf(case, tmp_path):
    kind, config = convert(case.root, tmp_path / "hf")
    assert (kind, config) == ("fairseq", case.config)
    hf, info = transformers.Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "hf",
                                                                                output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    feats = torch.randn(1, 19, case.config.input_feat_per_channel)
    tokens = torch.tensor([[2, 4, 5, 6]])
    with torch.no_grad():
        expected = case.hf(input_features=feats, decoder_input_ids=tokens).logits
        np.testing.assert_array_equal(hf.eval()(input_features=feats, decoder_input_ids=tokens).logits, expected)


@pytest.mark.parametrize("edit", ["delete", "add", "reshape"])
def test_key_errors_name_the_key(case, tmp_path, edit):
    state = dict(case.state)
    key = "encoder.transformer_layers.0.fc2.weight"
    if edit == "delete":
        del state[key]
    elif edit == "add":
        key = "decoder.layers.1.adapter.weight"
        state[key] = torch.zeros(3)
    else:
        state[key] = state[key][:-1]
    torch.save({"args": fairseq_args(case.hf.config), "model": state}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as err:
        load_fairseq_s2t(tmp_path / "bad.pt")
    assert "bad.pt" in str(err.value)


def test_unsupported_architecture_is_rejected(case, tmp_path):
    args = fairseq_args(case.hf.config)
    args.encoder_normalize_before = False
    torch.save({"args": args, "model": case.state}, tmp_path / "post_ln.pt")
    with pytest.raises(ValueError, match="encoder_normalize_before"):
        load_fairseq_s2t(tmp_path / "post_ln.pt")


def test_arbitrary_pickles_need_trust(case, tmp_path):
    torch.save({"args": fairseq_args(case.hf.config), "model": case.state,
                "extra_state": types.SimpleNamespace(epoch=1)}, tmp_path / "obj.pt")
    with pytest.raises(ValueError, match="trust_pickle"):
        load_fairseq_s2t(tmp_path / "obj.pt")
    _, params = load_fairseq_s2t(tmp_path / "obj.pt", trust_pickle=True)
    assert_same_params(params, case.params)


def test_kind_detection(case, tmp_path):
    assert detect_kind(case.root / "checkpoint_best.pt") == ("fairseq", case.root / "checkpoint_best.pt")
    assert detect_kind(case.root) == ("fairseq", case.root / "checkpoint_best.pt")
    assert detect_kind(case.root / "hf")[0] == "hf"
    kind, config, _ = load_checkpoint(case.root)
    assert (kind, config) == ("fairseq", case.config)
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="checkpoint_last.pt"):
        load_checkpoint(tmp_path)
