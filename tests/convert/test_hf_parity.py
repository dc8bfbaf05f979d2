"""Parity of S2TTransformer with HF Speech2TextForConditionalGeneration, and HF checkpoint conversion."""
import json
import shutil
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file, save_file  # noqa: E402

from mlst_jax.convert import load_checkpoint  # noqa: E402
from mlst_jax.convert.hf import load_hf_speech2text, save_hf_speech2text  # noqa: E402
from mlst_jax.models.s2t_transformer import S2TTransformer, init_decode_cache  # noqa: E402
from torch_reference import MaxDiffs, check_key_error  # noqa: E402

pytestmark = pytest.mark.torch

CONFIGS = {
    # 3 conv layers, odd widths (d_model=35 gives odd sinusoidal dims), gelu, untied output projection.
    "conv3_odd": dict(vocab_size=37, d_model=35, encoder_attention_heads=5, decoder_attention_heads=7,
                      encoder_ffn_dim=50, decoder_ffn_dim=46, conv_kernel_sizes=(5, 3, 3), num_conv_layers=3,
                      conv_channels=22, activation_function="gelu", tie_word_embeddings=False),
    # fairseq's standard 2-layer subsampler, tied embeddings.
    "conv2_tied": dict(vocab_size=41, d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
                       encoder_ffn_dim=64, decoder_ffn_dim=64, conv_kernel_sizes=(5, 5), num_conv_layers=2,
                       conv_channels=48, tie_word_embeddings=True),
}
LENGTHS = (53, 40, 27)
TOL = 1e-4
MAX_DIFFS = MaxDiffs()


def random_hf_model(seed: int, **kw):
    """Random eval-mode HF model whose LayerNorms and biases are moved away from their defaults."""
    torch.manual_seed(seed)
    config = transformers.Speech2TextConfig(encoder_layers=2, decoder_layers=2, **kw)
    model = transformers.Speech2TextForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif "layer_norm" in name:
                p.normal_(1.0, 0.2)
            else:
                p.normal_(0.0, float(np.prod(p.shape[1:])) ** -0.5)
    return model


def hf_run(model, feats, tokens, mask=None):
    with torch.no_grad():
        out = model(input_features=torch.from_numpy(feats), decoder_input_ids=torch.from_numpy(tokens),
                    attention_mask=None if mask is None else torch.from_numpy(mask))
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy()


record = MAX_DIFFS.record
report_diffs = MAX_DIFFS.fixture()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request, tmp_path_factory):
    name = request.param
    hf = random_hf_model(len(name), **CONFIGS[name])
    path = tmp_path_factory.mktemp(name)
    hf.save_pretrained(path)
    kind, config, params = load_checkpoint(path)
    assert kind == "hf"
    rng = np.random.RandomState(0)
    feats = rng.randn(len(LENGTHS), max(LENGTHS), 80).astype(np.float32)
    mask = (np.arange(max(LENGTHS))[None] < np.array(LENGTHS)[:, None]).astype(np.int64)
    tokens = np.concatenate([np.full((3, 1), 2), rng.randint(3, config.vocab_size, (3, 6))], axis=1)
    tokens[2, -2:] = config.pad_token_id
    model = S2TTransformer(config)

    def run_fn(p, f, l, t):
        def body(m, f, l, t):
            enc, valid = m.encode(f, l)
            return enc, valid, m.decode(t, enc, valid)
        return model.apply({"params": p}, f, l, t, method=body)

    run = jax.jit(run_fn)
    ref = [hf_run(hf, feats[i:i + 1, :n], tokens[i:i + 1]) for i, n in enumerate(LENGTHS)]
    enc, valid, logits = map(np.asarray, run(params, feats, jnp.array(LENGTHS), tokens))
    return types.SimpleNamespace(name=name, hf=hf, path=path, config=config, params=params, model=model, run=run,
                                 feats=feats, mask=mask, tokens=tokens, ref=ref, enc=enc, valid=valid, logits=logits)


def test_config(case):
    hf = case.hf.config
    for field in ("vocab_size", "d_model", "encoder_ffn_dim", "decoder_attention_heads", "conv_channels",
                  "activation_function", "tie_word_embeddings", "dropout", "attention_dropout"):
        assert getattr(case.config, field) == getattr(hf, field), field
    assert case.config.conv_kernel_sizes == tuple(hf.conv_kernel_sizes)
    assert ("lm_head" in case.params["decoder"]) == (not hf.tie_word_embeddings)


def test_encoder_matches_hf_per_utterance(case):
    for i, (enc_ref, _) in enumerate(case.ref):
        s = enc_ref.shape[1]
        assert case.valid[i].sum() == s == case.config.subsampled_lengths(LENGTHS[i])
        assert record(f"{case.name}/encoder", np.abs(case.enc[i, :s] - enc_ref[0]).max()) <= TOL


def test_logits_match_hf_per_utterance(case):
    for i, (_, logits_ref) in enumerate(case.ref):
        assert record(f"{case.name}/logits", np.abs(case.logits[i] - logits_ref[0]).max()) <= TOL


def test_longest_item_matches_hf_padded_batch(case):
    enc_ref, logits_ref = hf_run(case.hf, case.feats, case.tokens, case.mask)
    assert record(f"{case.name}/encoder_padded", np.abs(case.enc[0] - enc_ref[0]).max()) <= TOL
    assert record(f"{case.name}/logits_padded", np.abs(case.logits[0] - logits_ref[0]).max()) <= TOL


def test_padding_invariance(case):
    """Same outputs padded to 53 in a batch, padded to 120 alone, and unpadded alone.

    XLA's float32 reductions depend on the padded shape, so the bound is 1e-6 relative to the output scale.
    """
    def close(a, b):
        diff = np.abs(a - b).max()
        record(f"{case.name}/padding_rel", diff / max(1.0, np.abs(b).max()))
        assert diff <= 1e-6 * max(1.0, np.abs(b).max())

    i, n = 1, LENGTHS[1]
    s = int(case.valid[i].sum())
    long = np.random.RandomState(1).randn(1, 120, 80).astype(np.float32) * 5
    long[:, :n] = case.feats[i, :n]
    for feats in (long, case.feats[i:i + 1, :n]):
        enc, _, logits = case.run(case.params, feats, jnp.array([n]), case.tokens[i:i + 1])
        close(np.asarray(enc)[0, :s], case.enc[i, :s])
        close(np.asarray(logits)[0], case.logits[i])


def test_incremental_decoding_matches_teacher_forcing(case):
    cfg, model = case.config, case.model
    tokens = case.tokens.copy()
    tokens[tokens == cfg.pad_token_id] = 5
    enc, valid, full = case.run(case.params, case.feats, jnp.array(LENGTHS), tokens)

    @jax.jit
    def step(params, cache, token, index):
        def body(m):
            return m.decode_step(token, cache, index, m.precompute_cross_kv(enc), valid)
        return model.apply({"params": params}, method=body)

    cache = init_decode_cache(cfg, tokens.shape[0], tokens.shape[1])
    for t in range(tokens.shape[1]):
        logits, cache = step(case.params, cache, tokens[:, t], jnp.int32(t))
        assert record(f"{case.name}/incremental", np.abs(np.asarray(logits - full[:, t])).max()) <= 1e-5


def test_pytorch_bin_equals_safetensors(case, tmp_path):
    state = dict(case.hf.state_dict())
    state["model.encoder.embed_positions.weights"] = case.hf.model.encoder.embed_positions.weights
    torch.save(state, tmp_path / "pytorch_model.bin")
    shutil.copy(case.path / "config.json", tmp_path / "config.json")
    config, params = load_hf_speech2text(tmp_path)
    assert config == case.config
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, case.params)


def test_safetensors_loading_does_not_need_torch(case, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    config, params = load_hf_speech2text(case.path)
    assert config == case.config


def test_pytorch_bin_without_torch_is_a_clear_error(case, tmp_path, monkeypatch):
    torch.save(case.hf.state_dict(), tmp_path / "pytorch_model.bin")
    shutil.copy(case.path / "config.json", tmp_path / "config.json")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="PyTorch"):
        load_hf_speech2text(tmp_path)


def test_export_round_trip(case, tmp_path):
    save_hf_speech2text(tmp_path, case.config, case.params)
    original, exported = load_file(case.path / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert sorted(original) == sorted(exported)
    for key, x in original.items():
        assert exported[key].dtype == x.dtype and np.array_equal(exported[key], x), key
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "speech_to_text"
    assert config["architectures"] == ["Speech2TextForConditionalGeneration"]
    hf, info = transformers.Speech2TextForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert hf.config.tie_word_embeddings == case.config.tie_word_embeddings
    for i, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(hf_run(hf.eval(), case.feats[i:i + 1, :n], case.tokens[i:i + 1])[1],
                                      case.ref[i][1])


@pytest.mark.parametrize("edit", ["delete", "add", "reshape"])
def test_key_errors_name_the_key(case, tmp_path, edit):
    check_key_error(load_hf_speech2text, case.path, tmp_path, edit, key="model.encoder.layers.1.fc1.weight",
                    added="model.encoder.layers.1.extra_proj.weight")


def test_tied_lm_head_must_equal_embeddings(case, tmp_path):
    state = load_file(case.path / "model.safetensors")
    embed = state["model.decoder.embed_tokens.weight"]
    state["lm_head.weight"] = embed.copy() if case.config.tie_word_embeddings else embed + 1
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(case.path / "config.json", tmp_path / "config.json")
    _, params = load_hf_speech2text(tmp_path)
    if case.config.tie_word_embeddings:
        state["lm_head.weight"] = embed + 1
        save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
        with pytest.raises(ValueError, match=r"lm_head\.weight"):
            load_hf_speech2text(tmp_path)


def test_load_checkpoint_rejects_unknown_dirs(tmp_path):
    with pytest.raises(ValueError, match="accepted") as err:
        load_checkpoint(tmp_path)
    assert str(tmp_path) in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="bert"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="accepted"):
        load_checkpoint(tmp_path / "config.json")
