"""wav2vec 2.0: parity with HF `Wav2Vec2Model` / `Wav2Vec2ForCTC` (base and stable-layer-norm variants), padding,
SpecAugment masks, LayerDrop, and conversion of HF and fairseq checkpoints."""
import argparse
import json
import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.convert import load_pretrained
from mlst_jax.convert.wav2vec2 import (load_fairseq_wav2vec2, load_hf_wav2vec2, parse_conv_layers,
                                       save_fairseq_wav2vec2, save_hf_wav2vec2)
from mlst_jax.models import layers
from mlst_jax.models.wav2vec2 import (FeatureProjection, PositionalConvEmbedding, Wav2Vec2, Wav2Vec2Config, Wav2Vec2Encoder, abstract_params, named_config, span_mask)
from mlst_jax.models.params import count_params
from torch_reference import MaxDiffs, check_key_error, perturb, variant_fixtures

TOL = 1e-4
LENGTHS = (1500, 1100, 833)
MAX_DIFFS = MaxDiffs()
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, conv_dim=(16, 12, 16),
            conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embedding_groups=4, vocab_size=11,
            mask_time_prob=0.05, mask_time_length=4)
VARIANTS = {
    # base: group-norm extractor without conv bias, post-LN Transformer, even positional kernel
    "base": dict(feat_extract_norm="group", conv_bias=False, do_stable_layer_norm=False, num_conv_pos_embeddings=8),
    # large / LV-60: layer-norm extractor with conv bias, pre-LN Transformer, odd positional kernel
    "stable": dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True, num_conv_pos_embeddings=5,
                   hidden_act="gelu_new"),
}


record = MAX_DIFFS.record
report_diffs = MAX_DIFFS.fixture()


def build_case(name, tmp_path_factory):
    """The HF model of variant `name`, saved, converted, and both run on the padded batch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(len(name))
    hf = perturb(torch, transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**TINY, **VARIANTS[name])))
    path = tmp_path_factory.mktemp(name)
    hf.save_pretrained(path)
    config, params = load_hf_wav2vec2(path)
    rng = np.random.RandomState(0)
    wav = rng.randn(len(LENGTHS), max(LENGTHS)).astype(np.float32)
    for i, n in enumerate(LENGTHS):
        wav[i, n:] = 0.0
    model = Wav2Vec2(config)
    run = jax.jit(lambda p, w, l, m: model.apply({"params": p}, w, l, mask_time_indices=m))
    no_mask = np.zeros((len(LENGTHS), config.feat_extract_output_lengths(max(LENGTHS))), bool)
    out, valid = map(np.asarray, run(params, wav, np.array(LENGTHS), no_mask))
    with torch.no_grad():
        ref = [hf.wav2vec2(torch.from_numpy(wav[i:i + 1, :n])).last_hidden_state[0].numpy()
               for i, n in enumerate(LENGTHS)]
        ctc_ref = [hf(torch.from_numpy(wav[i:i + 1, :n])).logits[0].numpy() for i, n in enumerate(LENGTHS)]
    return types.SimpleNamespace(name=name, torch=torch, transformers=transformers, hf=hf, path=path, config=config,
                                 params=params, wav=wav, run=run, no_mask=no_mask, out=out, valid=valid,
                                 ref=ref, ctc_ref=ctc_ref)


build, case = variant_fixtures(build_case, VARIANTS)


@pytest.fixture(scope="module")
def stable(build):
    """The stable-layer-norm variant alone, for the checks one variant is enough for."""
    return build("stable")


@pytest.mark.torch
def test_config_from_hf(case):
    hf = case.hf.config
    for field in ("hidden_size", "num_hidden_layers", "intermediate_size", "feat_extract_norm", "conv_bias",
                  "do_stable_layer_norm", "num_conv_pos_embeddings", "hidden_act", "mask_time_prob", "layerdrop"):
        assert getattr(case.config, field) == getattr(hf, field), field
    assert case.config.conv_dim == tuple(hf.conv_dim) and case.config.conv_stride == tuple(hf.conv_stride)
    assert Wav2Vec2Config.from_dict(case.config.to_dict()) == case.config


@pytest.mark.torch
def test_padded_batch_matches_hf_per_utterance(case):
    for i, n in enumerate(LENGTHS):
        ref = case.ref[i]
        assert case.valid[i].sum() == ref.shape[0] == case.config.feat_extract_output_lengths(n)
        assert record(f"{case.name}/last_hidden_state", np.abs(case.out[i, :ref.shape[0]] - ref).max()) <= TOL


@pytest.mark.torch
def test_hf_padded_batch_convention(case):
    """HF on the padded batch with attention_mask: equal to ours for the stable variant; for the base variant HF's
    group norm sees the padding, so only the unpadded row agrees (ours matches HF per utterance instead)."""
    torch = case.torch
    mask = (np.arange(max(LENGTHS))[None] < np.array(LENGTHS)[:, None]).astype(np.int64)
    with torch.no_grad():
        padded = case.hf.wav2vec2(torch.from_numpy(case.wav), attention_mask=torch.from_numpy(mask))
    padded = padded.last_hidden_state.numpy()
    for i in range(len(LENGTHS)):
        s = int(case.valid[i].sum())
        diff = np.abs(case.out[i, :s] - padded[i, :s]).max()
        if case.config.do_stable_layer_norm or i == 0:
            assert record(f"{case.name}/hf_padded_batch", diff) <= TOL
        else:
            assert diff > 1e-2  # HF's padded base model differs from its own unpadded output


@pytest.mark.torch
def test_outputs_do_not_depend_on_padding_values(case):
    noisy = case.wav.copy()
    for i, n in enumerate(LENGTHS):
        noisy[i, n:] = np.random.RandomState(i).randn(max(LENGTHS) - n) * 3
    out, _ = case.run(case.params, noisy, np.array(LENGTHS), case.no_mask)
    out = np.asarray(out)
    for i in range(len(LENGTHS)):
        s = int(case.valid[i].sum())
        assert record(f"{case.name}/padding_values", np.abs(out[i, :s] - case.out[i, :s]).max()) <= 1e-5


@pytest.mark.torch
def test_mask_time_indices_match_hf(case):
    torch = case.torch
    mask = case.no_mask.copy()
    mask[:, 3:7] = True
    mask[1, 20:24] = True
    out, _ = case.run(case.params, case.wav, np.array(LENGTHS), mask)
    i, n = 1, LENGTHS[1]
    s = int(case.valid[i].sum())
    with torch.no_grad():
        ref = case.hf.wav2vec2(torch.from_numpy(case.wav[i:i + 1, :n]),
                               mask_time_indices=torch.from_numpy(mask[i:i + 1, :s])).last_hidden_state[0].numpy()
    assert record(f"{case.name}/masked", np.abs(np.asarray(out)[i, :s] - ref).max()) <= TOL
    assert np.abs(ref - case.ref[i]).max() > 1e-2  # the mask changed the output


@pytest.mark.torch
def test_ctc_head(case, tmp_path):
    config, params = load_hf_wav2vec2(case.path, ctc_head=True)
    assert set(params) == {"wav2vec2", "lm_head"}
    jax.tree.map(np.testing.assert_array_equal, params["wav2vec2"], case.params)
    kernel, bias = params["lm_head"]["kernel"], params["lm_head"]["bias"]
    for i, ref in enumerate(case.ctc_ref):
        logits = case.out[i, :ref.shape[0]] @ kernel + bias
        assert record(f"{case.name}/ctc_logits", np.abs(logits - ref).max()) <= TOL
    # exporting the ForCTC params writes a directory HF loads without missing or unexpected keys
    save_hf_wav2vec2(tmp_path, config, params)
    hf, info = case.transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    for name, p in case.hf.state_dict().items():
        np.testing.assert_array_equal(hf.state_dict()[name].numpy(), p.numpy(), err_msg=name)


@pytest.mark.torch
def test_export_base_model_round_trip(case, tmp_path):
    save_hf_wav2vec2(tmp_path, case.config, case.params)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["Wav2Vec2Model"]
    hf, info = case.transformers.Wav2Vec2Model.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    for name, p in case.hf.wav2vec2.state_dict().items():
        np.testing.assert_array_equal(hf.state_dict()[name].numpy(), p.numpy(), err_msg=name)
    model, kind, config, params = load_pretrained(tmp_path)
    assert (model, kind, config) == ("wav2vec2", "hf", case.config)


# HF → fairseq names, written independently of the converter's rules.
HF_TO_FAIRSEQ = [
    (r"^wav2vec2\.", ""), (r"\.attention\.", ".self_attn."),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"\.feed_forward\.intermediate_dense\.", ".fc1."), (r"\.feed_forward\.output_dense\.", ".fc2."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."), (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^masked_spec_embed$", "mask_emb"),
    (r"pos_conv_embed\.conv\.parametrizations\.weight\.original0", "pos_conv.0.weight_g"),
    (r"pos_conv_embed\.conv\.parametrizations\.weight\.original1", "pos_conv.0.weight_v"),
    (r"pos_conv_embed\.conv\.bias", "pos_conv.0.bias"), (r"conv_layers\.(\d+)\.conv\.", r"conv_layers.\1.0."),
]


def fairseq_state(case):
    out = {}
    for key, x in case.hf.state_dict().items():
        for pattern, repl in HF_TO_FAIRSEQ:
            key = re.sub(pattern, repl, key)
        key = re.sub(r"conv_layers\.(\d+)\.layer_norm\.",
                     r"conv_layers.\1.2.1." if case.config.feat_extract_norm == "layer" else r"conv_layers.\1.2.", key)
        out[key] = x.clone()
    return out


def fairseq_args(config):
    conv = " + ".join(f"[({d}, {k}, {s})]" for d, k, s in zip(config.conv_dim, config.conv_kernel, config.conv_stride))
    return dict(arch="wav2vec2", extractor_mode="layer_norm" if config.feat_extract_norm == "layer" else "default",
                encoder_layers=config.num_hidden_layers, encoder_embed_dim=config.hidden_size,
                encoder_ffn_embed_dim=config.intermediate_size, encoder_attention_heads=config.num_attention_heads,
                activation_fn="gelu_accurate" if config.hidden_act == "gelu_new" else "gelu", conv_feature_layers=conv,
                conv_bias=config.conv_bias, conv_pos=config.num_conv_pos_embeddings,
                conv_pos_groups=config.num_conv_pos_embedding_groups, layer_norm_first=config.do_stable_layer_norm,
                mask_prob=0.65, mask_length=10)


@pytest.mark.torch
def test_fairseq_pretrained_checkpoint(case, tmp_path):
    torch = case.torch
    state = {k: v for k, v in fairseq_state(case).items() if not k.startswith("lm_head.")}
    state["quantizer.vars"] = torch.zeros(1, 4, 2)  # pretraining-only modules are ignored
    state["final_proj.weight"] = torch.zeros(3, 32)
    args = argparse.Namespace(**fairseq_args(case.config))
    torch.save({"args": args, "model": state}, tmp_path / "checkpoint_best.pt")
    config, params = load_fairseq_wav2vec2(tmp_path / "checkpoint_best.pt")
    for field in ("hidden_size", "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm",
                  "do_stable_layer_norm", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "hidden_act"):
        assert getattr(config, field) == getattr(case.config, field), field
    assert config.mask_time_prob == 0.65
    jax.tree.map(np.testing.assert_array_equal, params, case.params)
    model, kind, _, _ = load_pretrained(tmp_path)
    assert (model, kind) == ("wav2vec2", "fairseq")
    # our fairseq export reads back identically
    save_fairseq_wav2vec2(tmp_path / "out" / "w2v.pt", config, params)
    config2, params2 = load_fairseq_wav2vec2(tmp_path / "out" / "w2v.pt")
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params2, params)


@pytest.mark.torch
def test_fairseq_finetuned_ctc_checkpoint(case, tmp_path):
    state = {("w2v_encoder.proj." + k[len("lm_head."):] if k.startswith("lm_head.")
              else "w2v_encoder.w2v_model." + k): v for k, v in fairseq_state(case).items()}
    pt = tmp_path / "ctc.pt"
    cfg = {"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": fairseq_args(case.config)}, "mask_prob": 0.5}}
    case.torch.save({"cfg": cfg, "model": state}, pt)
    config, params = load_fairseq_wav2vec2(pt, ctc_head=True)
    assert config.vocab_size == case.config.vocab_size and config.mask_time_prob == 0.5
    ref = load_hf_wav2vec2(case.path, ctc_head=True)[1]
    jax.tree.map(np.testing.assert_array_equal, params, ref)
    jax.tree.map(np.testing.assert_array_equal, load_fairseq_wav2vec2(pt)[1], case.params)


@pytest.mark.torch
@pytest.mark.parametrize("edit", ["delete", "add", "reshape"])
def test_key_errors_name_the_key(stable, tmp_path, edit):
    check_key_error(load_hf_wav2vec2, stable.path, tmp_path, edit,
                    key="wav2vec2.encoder.layers.1.feed_forward.intermediate_dense.weight",
                    added="wav2vec2.encoder.layers.1.extra.weight")


def random_params(shapes, seed=0):
    """Random parameters of the given shapes (cheaper than compiling `init`)."""
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda x: (rng.randn(*x.shape) * 0.3).astype(np.float32), shapes)


def test_layerdrop_skips_layers_only_in_training():
    cfg = Wav2Vec2Config(**{**TINY, **VARIANTS["stable"], "mask_time_prob": 0.0, "hidden_dropout": 0.0,
                            "attention_dropout": 0.0, "activation_dropout": 0.0, "layerdrop": 1.0})
    wav = np.random.RandomState(0).randn(1, 400).astype(np.float32)
    lens = np.array([400])
    params = random_params(abstract_params(cfg))

    @jax.jit
    def run(params, rng):
        train = Wav2Vec2(cfg).apply({"params": params}, wav, lens, deterministic=False, rngs={"dropout": rng})[0]
        no_layers = {**params, "encoder": {k: v for k, v in params["encoder"].items() if not k.startswith("layers_")}}
        return train, Wav2Vec2(cfg.replace(num_hidden_layers=0)).apply({"params": no_layers}, wav, lens)[0]

    train, skipped = map(np.asarray, run(params, jax.random.PRNGKey(1)))
    np.testing.assert_allclose(train, skipped, atol=1e-6)
    module = types.SimpleNamespace(make_rng=lambda name: jax.random.PRNGKey(0))
    assert layers.layer_dropped(module, 1.0, deterministic=True) is None  # never at inference
    assert bool(layers.layer_dropped(module, 1.0, deterministic=False))


def mask_runs(row):
    """Lengths of the runs of True in a 1-D bool mask."""
    row = np.asarray(row).astype(int)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], row])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([row, [0]])) == -1)
    return [int(e - s + 1) for s, e in zip(starts, ends)]


def test_span_mask_follows_hf_rules():
    masks = jax.jit(span_mask, static_argnums=(2, 3, 4, 5))
    lengths = jnp.array([100, 60, 9])
    mask = np.asarray(masks(jax.random.PRNGKey(0), lengths, 100, 0.4, 5, 2))
    for row, n in zip(mask, np.asarray(lengths)):
        assert not row[n:].any()  # only valid frames are masked
        k = row.sum()
        assert 5 <= k <= max(int(0.4 * n / 5) + 1, 2) * 5  # at least one span (min_masks), at most the allowed
        assert all(r >= 5 for r in mask_runs(row))  # runs of whole spans
    fractions = [np.asarray(masks(jax.random.PRNGKey(s), lengths, 100, 0.4, 5, 2))[0].mean() for s in range(20)]
    assert 0.25 < np.mean(fractions) <= 0.45  # 8-9 spans of 5 in 100 frames, a bit less from overlaps
    with pytest.raises(ValueError, match="mask_length"):
        span_mask(jax.random.PRNGKey(0), lengths, 4, 0.4, 5, 2)


def test_channel_masking_in_training_only():
    """SpecAugment along channels as HF's `Wav2Vec2Model._mask_hidden_states`: in training, spans of
    `mask_feature_length` channels (>= `mask_feature_min_masks` spans, drawn per utterance) of the feature-projection
    output are set to 0 at every time step, after time masking and before the positional conv; never at inference."""
    span, min_masks, prob = 4, 2, 0.05
    no_dropout = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                      layerdrop=0.0)
    cfg = Wav2Vec2Config(**{**TINY, **VARIANTS["base"], **no_dropout, "mask_time_prob": 0.0,
                            "mask_feature_prob": prob, "mask_feature_length": span,
                            "mask_feature_min_masks": min_masks})
    h = cfg.hidden_size
    # HF's compute_num_masked_span for the channel axis: max(int(prob·H/L + eps), min_masks), eps ~ U[0, 1)
    assert {max(int(prob * h / span + eps), min_masks) for eps in (0.0, 0.999)} == {2}  # exactly 2 spans
    lens = np.array([400, 330, 250])
    wav = np.random.RandomState(0).randn(len(lens), lens.max()).astype(np.float32)
    for i, n in enumerate(lens):
        wav[i, n:] = 0.0
    frames = cfg.feat_extract_output_lengths(int(lens.max()))
    no_time = np.zeros((len(lens), frames), bool)

    def runner(cfg):
        def run(params, rng, time_mask, deterministic):
            seen = {}

            def spy(next_fun, args, kwargs, context):
                if context.method_name == "__call__" and isinstance(context.module,
                                                                    (Wav2Vec2Encoder, PositionalConvEmbedding)):
                    seen[type(context.module).__name__] = args[0]  # the input
                out = next_fun(*args, **kwargs)
                if context.method_name == "__call__" and isinstance(context.module, FeatureProjection):
                    seen["proj"] = out
                return out

            with nn.intercept_methods(spy):
                out, valid = Wav2Vec2(cfg).apply({"params": params}, wav, lens, deterministic=deterministic,
                                                 mask_time_indices=time_mask, rngs={"dropout": rng})
            return out, valid, seen

        jitted = jax.jit(run, static_argnums=3)
        return lambda *a: jax.tree.map(np.asarray, jitted(*a))

    params = random_params(abstract_params(cfg))
    run = runner(cfg)
    masks = []
    for seed in range(4):
        out, valid, seen = run(params, jax.random.PRNGKey(seed), no_time, False)
        proj, enc_in = seen["proj"], seen["Wav2Vec2Encoder"]
        zeroed = (enc_in == 0).all(axis=1)  # [B, H]: channels that are 0 at every frame (padding included)
        # the rest is the projection, untouched: a channel is masked at all time steps of an utterance or at none
        np.testing.assert_array_equal(enc_in, np.where(zeroed[:, None, :], 0.0, proj))
        np.testing.assert_array_equal(seen["PositionalConvEmbedding"], enc_in * valid[..., None])
        for row in zeroed:  # 2 distinct starts of `span` channels: two runs of `span` or one of span+1 .. 2·span
            runs = mask_runs(row)
            assert runs == [span, span] or (len(runs) == 1 and span < runs[0] <= 2 * span), runs
        masks.extend(map(tuple, zeroed))
        if seed == 0:
            train0 = out
    assert len(set(masks)) > 1  # drawn per utterance and per step

    # time masking first (mask vector), then channel masking (0) on top, as HF
    time_mask = no_time.copy()
    time_mask[:, 2:6] = True
    _, _, seen = run(params, jax.random.PRNGKey(0), time_mask, False)
    zeroed = (seen["Wav2Vec2Encoder"] == 0).all(axis=1)
    assert zeroed.any(1).all()
    expected = np.where(time_mask[..., None], params["masked_spec_embed"], seen["proj"])
    np.testing.assert_array_equal(seen["Wav2Vec2Encoder"], np.where(zeroed[:, None, :], 0.0, expected))

    # inference never masks, even with an RNG at hand
    out, _, seen = run(params, jax.random.PRNGKey(0), no_time, True)
    np.testing.assert_array_equal(seen["Wav2Vec2Encoder"], seen["proj"])
    assert np.abs(out - train0).max() > 1e-3

    # with both probabilities 0 (and no dropout) training is inference
    cfg0 = cfg.replace(mask_feature_prob=0.0)
    assert not cfg0.has_masked_spec_embed
    params0 = {k: v for k, v in params.items() if k != "masked_spec_embed"}
    run0 = runner(cfg0)
    train, _, seen = run0(params0, jax.random.PRNGKey(0), None, False)
    np.testing.assert_array_equal(seen["Wav2Vec2Encoder"], seen["proj"])
    np.testing.assert_allclose(train, run0(params0, jax.random.PRNGKey(0), None, True)[0], rtol=0, atol=1e-6)


@pytest.mark.torch
def test_parameter_counts_match_hf_without_allocation():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    large = abstract_params(named_config("large_lv60"))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(large))
    assert count_params(large) == 315_438_720  # wav2vec2-large-lv60 (incl. masked_spec_embed): 315.44M
    with torch.device("meta"):
        hf = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True))
    assert count_params(large) == sum(p.numel() for p in hf.parameters())


def test_config_validation_and_conv_spec():
    with pytest.raises(ValueError, match="feat_extract_norm"):
        Wav2Vec2Config(feat_extract_norm="batch")
    with pytest.raises(ValueError, match="conv_dim, conv_stride and conv_kernel"):
        Wav2Vec2Config(conv_dim=(512,))
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    with pytest.raises(ValueError, match="unsupported"):
        parse_conv_layers("__import__('os').system('true')")
    assert named_config("base").feat_extract_output_lengths(16000) == 49
