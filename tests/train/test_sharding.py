"""Sharded training on 8 fake CPU devices: every mesh gives the 1-device result; specs follow the rules table."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.train import optim, sharding as shd, state as st, step as sp

CFG = S2TConfig(vocab_size=48, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
                decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=16,
                conv_kernel_sizes=(3, 3), dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
# Adam's eps is raised so that gradients that are zero up to rounding (attention key biases) are not blown up
# to ±lr by the normalization; with eps=1e-8 those leaves differ by ~lr between meshes, as they would
# between any two reduction orders.
OPT = dict(lr=1e-3, schedule="constant", eps=1e-4, clip_norm=1.0)
# Faster XLA:CPU compiles (each compile is most of a test's time); the same options for every mesh.
FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
MESHES = {"1dev": (1, 1, 1), "data8": (8, 1, 1), "data2_fsdp4": (2, 4, 1), "data2_fsdp2_tensor2": (2, 2, 2)}
TOL = 1e-5


def make_batch(seed=0, B=8, T=24, U=7):
    r = np.random.RandomState(seed)
    tgt_len = np.array([5, 3, 6, 0, 6, 5, 3, 0])  # rows 3 and 7 are padding; halves hold 11 target tokens each
    feat_len = np.array([24, 17, 20, 0, 22, 24, 13, 0])
    target = r.randint(3, CFG.vocab_size, (B, U)).astype(np.int32)
    weights = (np.arange(U)[None] < tgt_len[:, None]).astype(np.float32)
    weights[:, 0] = 0.0
    feats = r.randn(B, T, 80).astype(np.float32) * (np.arange(T)[None, :, None] < feat_len[:, None, None])
    return dict(features=feats, feature_lengths=feat_len.astype(np.int32),
                decoder_input=np.where(tgt_len[:, None] > np.arange(U), target, CFG.pad_token_id).astype(np.int32),
                target=target, loss_weights=weights, valid=(tgt_len > 0).astype(np.float32))


def stratify(batch, groups):
    """[G·b] -> [G, b] such that the step's b-major flattening restores the original row order."""
    return {k: np.swapaxes(v.reshape((-1, groups) + v.shape[1:]), 0, 1) for k, v in batch.items()}


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def batch():
    return make_batch()


@pytest.fixture(scope="module")
def runs(batch):
    """Per mesh: initial state shardings and a copy of the initial state, params after steps 1 and 3, metrics."""
    model, tx = S2TTransformer(CFG), optim.make_optimizer(OPT)
    out = {}
    for name, shape in MESHES.items():
        mesh = shd.make_mesh(*shape, devices=jax.devices()[:1] if name == "1dev" else None)
        state = st.create_train_state(model, tx, jax.random.PRNGKey(0), batch, mesh, compiler_options=FAST)
        shardings = st.shardings_of(state)
        train = sp.make_train_step(model, tx, label_smoothing=0.1, mesh=mesh, state_shardings=shardings,
                                   batch_shardings=shd.batch_sharding(mesh), compiler_options=FAST)
        run = dict(mesh=mesh, shardings=shardings, init=jax.tree.map(lambda x: x.copy(), state), metrics=[])
        for i in range(3):
            state, metrics = train(state, batch)
            run["metrics"].append(jax.device_get(metrics))
            if i == 0:
                run["params1"] = jax.device_get(state.params)
        run["params3"], run["final"] = jax.device_get(state.params), state
        out[name] = run
    return out


@pytest.mark.parametrize("name", [n for n in MESHES if n != "1dev"])
def test_meshes_match_single_device(runs, name):
    ref, run = runs["1dev"], runs[name]
    for m_ref, m in zip(ref["metrics"], run["metrics"]):
        for k in ("loss", "nll", "grad_norm"):
            assert abs(float(m_ref[k]) - float(m[k])) < TOL, (k, m_ref[k], m[k])
        assert float(m["ntokens"]) == 22.0 and float(m["nsentences"]) == 6.0
        assert float(m["lr"]) == pytest.approx(OPT["lr"])
    assert max_diff(ref["params3"], run["params3"]) < TOL
    assert max_diff(ref["params3"], ref["params1"]) > 1e-3  # the steps really moved the parameters
    assert int(run["final"].step) == 3


def _expected_spec(shape, axes, mesh):
    rules, used, spec = dict(shd.LOGICAL_RULES), set(), []
    for size, logical in zip(shape, axes):
        target = rules.get(logical) if logical else None
        names = () if target is None else (target,) if isinstance(target, str) else target
        ok = names and size % math.prod(mesh.shape[a] for a in names) == 0 and not used & set(names)
        spec.append(target if ok else None)
        used |= set(names) if ok else set()
    return P(*spec)


@pytest.mark.parametrize("name", list(MESHES))
def test_param_and_optimizer_specs_follow_rules(runs, name):
    run = runs[name]
    params, mesh = run["final"].params, run["mesh"]
    axes = shd.param_logical_axes(params)
    flat_axes = jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple))
    for x, a in zip(jax.tree.leaves(params), flat_axes):
        assert x.sharding.spec == _expected_spec(x.shape, a, mesh)
    assert shd.sharding_report(params, mesh) == []
    # Adam moments are sharded like their parameters; counters are replicated.
    adam = run["final"].opt_state[1].inner_state[0]
    for moments in (adam.mu, adam.nu):
        assert jax.tree.map(lambda m: m.sharding.spec, moments) == jax.tree.map(lambda p: p.sharding.spec, params)
    assert adam.count.sharding.spec == P()
    assert st.shardings_of(run["final"]) == run["shardings"]


def test_specific_specs_on_three_axis_mesh(runs):
    p = runs["data2_fsdp2_tensor2"]["final"].params
    enc, dec = p["encoder"], p["decoder"]
    assert enc["layers_0"]["ffn"]["fc1"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert enc["layers_0"]["ffn"]["fc1"]["bias"].sharding.spec == P("tensor")
    assert enc["layers_0"]["ffn"]["fc2"]["kernel"].sharding.spec == P("tensor", "fsdp")
    assert dec["layers_0"]["self_attn"]["q_proj"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert dec["layers_0"]["encoder_attn"]["out_proj"]["kernel"].sharding.spec == P("tensor", "fsdp")
    assert dec["embed_tokens"]["embedding"].sharding.spec == P("tensor", "fsdp")
    assert dec["lm_head"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert enc["conv"]["conv_layers_1"]["kernel"].sharding.spec == P(None, None, "tensor")
    assert enc["layers_0"]["final_layer_norm"]["scale"].sharding.spec == P(None)
    fc1 = enc["layers_0"]["ffn"]["fc1"]["kernel"]
    assert {s.data.shape for s in fc1.addressable_shards} == {(8, 16)}  # really split, not replicated


def test_stratified_batch_matches_flat(runs, batch):
    run = runs["data2_fsdp2_tensor2"]
    mesh, model, tx = run["mesh"], S2TTransformer(CFG), optim.make_optimizer(OPT)
    train = sp.make_train_step(model, tx, label_smoothing=0.1, mesh=mesh, state_shardings=run["shardings"],
                               batch_shardings=shd.batch_sharding(mesh, 2, stratified=True), compiler_options=FAST)
    state, metrics = train(run["init"], stratify(batch, groups=2))
    for k in ("loss", "nll", "ntokens", "nsentences", "grad_norm"):
        assert abs(float(metrics[k]) - float(run["metrics"][0][k])) < TOL, k
    assert max_diff(jax.device_get(state.params), run["params1"]) < TOL


def test_eval_step_stratified_and_sharded(runs, batch):
    host_params, results = runs["1dev"]["params3"], []
    for name, stratified in (("1dev", False), ("data2_fsdp2_tensor2", True)):
        mesh = runs[name]["mesh"]
        shardings = shd.param_shardings(host_params, mesh)
        evaluate = sp.make_eval_step(S2TTransformer(CFG), mesh=mesh, param_shardings=shardings,
                                     batch_shardings=shd.batch_sharding(mesh, 2 if stratified else 1, stratified),
                                     compiler_options=FAST)
        results.append(jax.device_get(evaluate(jax.device_put(host_params, shardings),
                                               stratify(batch, 2) if stratified else batch)))
    flat, strat = results
    assert float(flat["ntokens"]) == float(strat["ntokens"]) == 22.0
    assert abs(float(flat["nll_sum"]) - float(strat["nll_sum"])) < 1e-4


def test_grad_accumulation_matches_big_batch(runs, batch):
    model = S2TTransformer(CFG.replace(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0))
    mesh = runs["1dev"]["mesh"]

    def run(opt, batches):
        tx = optim.make_optimizer(opt)
        state = st.create_train_state(model, tx, jax.random.PRNGKey(0), batch, mesh, compiler_options=FAST)
        train = sp.make_train_step(model, tx, label_smoothing=0.1, mesh=mesh, state_shardings=st.shardings_of(state),
                                   batch_shardings=shd.batch_sharding(mesh), compiler_options=FAST)
        history = [jax.device_get(state.params)]
        for b in batches:
            state, _ = train(state, b)
            history.append(jax.device_get(state.params))
        return history

    init, big = run(OPT, [batch])
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    _, first, second = run(dict(OPT, grad_accum=2), halves)
    assert max_diff(first, init) == 0.0  # no update before the k-th micro-batch
    assert max_diff(second, big) < TOL
    assert max_diff(big, init) > 1e-4


def test_bf16_compute_keeps_fp32_params_and_loss(runs, batch):
    run = runs["1dev"]
    model, tx = S2TTransformer(CFG.replace(dtype="bfloat16")), optim.make_optimizer(OPT)
    train = sp.make_train_step(model, tx, label_smoothing=0.1, mesh=run["mesh"], state_shardings=run["shardings"],
                               batch_shardings=shd.batch_sharding(run["mesh"]))
    lowered = train.lower(run["init"], batch)
    new_state, metrics = lowered.out_info
    assert {x.dtype for x in jax.tree.leaves(new_state)} <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32),
                                                              jnp.dtype(jnp.uint32)}
    assert metrics["loss"].dtype == jnp.float32
    matmuls = [line for line in lowered.as_text().splitlines() if "dot_general" in line or "convolution" in line]
    assert matmuls and all("bf16" in line for line in matmuls)  # every matmul and conv, forward and backward


def test_fallback_to_replication_is_reported():
    mesh = shd.make_mesh(data=1, fsdp=2, tensor=4)
    S = jax.ShapeDtypeStruct
    f32 = jnp.float32
    params = {
        "ffn": {"fc1": {"kernel": S((16, 30), f32), "bias": S((30,), f32)}},
        "embed_tokens": {"embedding": S((48, 15), f32)},
        "mystery": {"w": S((4, 4), f32)},
        # mBART / wav2vec 2.0 style names and a per-language copies axis.
        "layers": {"0": {"self_attn": {"k_proj": {"kernel": S((3, 16, 16), f32), "bias": S((3, 16), f32)}}}},
        "layernorm_embedding": {"scale": S((16,), f32)},
        "embed_positions": {"embedding": S((130, 16), f32)},
        "feature_extractor": {"conv_layers": {"0": {"conv": {"kernel": S((10, 1, 512), f32)}}}},
    }
    specs = shd.param_specs(params, mesh)
    assert specs["ffn"]["fc1"]["kernel"] == P("fsdp", None)
    assert specs["ffn"]["fc1"]["bias"] == P(None)
    assert specs["embed_tokens"]["embedding"] == P("tensor", None)
    assert specs["mystery"]["w"] == P(None, None)
    assert specs["layers"]["0"]["self_attn"]["k_proj"]["kernel"] == P(None, "fsdp", "tensor")
    assert specs["layers"]["0"]["self_attn"]["k_proj"]["bias"] == P(None, "tensor")
    assert specs["layernorm_embedding"]["scale"] == P(None)
    assert specs["embed_positions"]["embedding"] == P(None, "fsdp")
    assert specs["feature_extractor"]["conv_layers"]["0"]["conv"]["kernel"] == P(None, None, "tensor")
    axes = shd.param_logical_axes(params)
    assert axes["layers"]["0"]["self_attn"]["k_proj"]["kernel"] == ("copies", "embed", "heads")
    report = "\n".join(shd.sharding_report(params, mesh))
    assert "ffn/fc1/kernel: dim 1 (mlp=30) not divisible by tensor=4" in report
    assert "ffn/fc1/bias" in report and "embed_tokens/embedding: dim 1 (embed=15)" in report
    assert "mystery/w: no rule" in report
    assert "k_proj" not in report
    shardings = shd.param_shardings(params, mesh)
    assert shardings["ffn"]["fc1"]["kernel"].spec == P("fsdp", None)


def test_make_mesh_validates_device_count():
    with pytest.raises(ValueError, match=r"(?s)3.*8"):
        shd.make_mesh(data=3)
    mesh = shd.make_mesh(data=2, fsdp=2, tensor=2)
    assert mesh.axis_names == shd.MESH_AXES and dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert shd.batch_sharding(mesh, 3).spec == P(("data", "fsdp"), None, None)
    assert shd.batch_sharding(mesh, 3, stratified=True).spec == P(None, ("data", "fsdp"), None)
