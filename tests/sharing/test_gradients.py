"""Per-task gradients: the vmapped accumulator against one `jax.grad` per task, cosines against numpy."""
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.sharing.gradients import (Quadruplet, cosine_matrix, make_task_grad_fn, read_quadruplets_csv,
                                        similarities, task_gradients, write_quadruplets_csv)
from mlst_jax.models.params import path_names
from mlst_jax.sharing.plan import SharingPlan, unit_of
from mlst_jax.sharing.strategies import differentiable_units
from mlst_jax.models.losses import label_smoothed_nll

LANGS = ("de", "es", "fr")
B, T, U, V = 3, 40, 7, 50


@pytest.fixture(scope="module")
def setup():
    cfg = S2TConfig(vocab_size=V, d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64,
                    decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=32,
                    dropout=0.3, attention_dropout=0.3, activation_dropout=0.3)
    model = S2TTransformer(cfg)
    rng = np.random.default_rng(0)
    n = len(LANGS)

    def batch(lens):
        feats = rng.standard_normal((B, T, 80)).astype(np.float32)
        feats *= np.arange(T)[None, :, None] < np.asarray(lens)[:, None, None]
        tgt = rng.integers(4, V, (n, B, U)).astype(np.int32)
        dec = np.concatenate([np.full((n, B, 1), 2, np.int32), tgt[..., :-1]], axis=-1)
        w = (rng.random((n, B, U)) > 0.2).astype(np.float32)
        w[:, :, 0] = 0.0
        return dict(features=feats, feature_lengths=np.asarray(lens, np.int32), decoder_input=dec, target=tgt,
                    loss_weights=w)

    batches = [batch([40, 31, 20]), batch([40, 12, 33])]
    batches[1]["valid"] = np.array([1, 1, 0], np.int32)  # the last row only fills the shape
    return model, random_params(model, rng), batches


def random_params(model, rng):
    """Random parameters without compiling `model.init` (LayerNorm scales around 1)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, T, 80)), jnp.full((1,), T),
                            jnp.zeros((1, U), jnp.int32))["params"]
    return jax.tree_util.tree_map_with_path(
        lambda p, x: (float(path_names(p)[-1] == "scale") + 0.2 * rng.standard_normal(x.shape)).astype(np.float32),
        shapes)


@pytest.fixture(scope="module")
def grad_sum(setup):
    """Task t's gradient of the summed NLL w.r.t. all (plain) parameters, and its token count."""
    model = setup[0]

    @jax.jit
    def fn(p, b, t):
        w = b["loss_weights"][t] * b["valid"][:, None]

        def nll(q):
            logits = model.apply({"params": q}, b["features"], b["feature_lengths"], b["decoder_input"][t])
            return label_smoothed_nll(logits, b["target"][t], w)[1]
        return jax.grad(nll)(p), w.sum()
    return fn


def reference(grad_sum, params, plan, batches):
    """{unit: [n, D]} mean gradients computed one task at a time with plain jax.grad."""
    out = {}
    units = set(differentiable_units(plan))
    for t in range(len(LANGS)):
        view = plan.view(params, t)
        total, tokens = None, 0.0
        for b in batches:
            b = {"valid": np.ones(B, np.int32), **b}
            g, ntok = grad_sum(view, {k: jnp.asarray(v) for k, v in b.items()}, t)
            total = g if total is None else jax.tree.map(jnp.add, total, g)
            tokens += float(ntok)
        rows = {}
        for path, x in jax.tree_util.tree_flatten_with_path(total)[0]:
            names = path_names(path)
            if unit_of(names) in units:
                rows.setdefault(unit_of(names), []).append(np.asarray(x).reshape(-1) / tokens)
        for u, parts in rows.items():
            out.setdefault(u, []).append(np.concatenate(parts))
    return {u: np.stack(v) for u, v in out.items()}


def perturbed(plan, base):
    """Stored parameters whose copies differ from each other."""
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32),
                        plan.expand(base))


@pytest.fixture(scope="module", params=["shared", "split"])
def case(request, setup):
    model, base, batches = setup
    plan = SharingPlan.shared(base, LANGS)
    if request.param == "split":
        units = differentiable_units(plan)
        plan = (plan.split(units[0], ["fr"]).split(units[5], ["es", "fr"]).split(units[5], ["fr"])
                .split(units[-1], ["de"]))
        assert plan.units()[units[5]].num_copies == 3
    params = perturbed(plan, base)
    grads = task_gradients(model, params, plan, batches, progress=False)
    return model, params, plan, batches, grads


def test_matches_one_task_at_a_time(case, grad_sum):
    model, params, plan, batches, grads = case
    ref = reference(grad_sum, params, plan, batches)
    assert set(grads.grads) == set(ref) == set(differentiable_units(plan))
    for u, want in ref.items():
        got = grads.unit_matrix(u)
        assert got.shape == want.shape
        err = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
        assert err.max() <= 1e-5, (u, err)
    assert grads.utterances == 5
    expect_tokens = [sum((b["loss_weights"][t] * b.get("valid", np.ones(B))[:, None]).sum() for b in batches)
                     for t in range(len(LANGS))]
    np.testing.assert_allclose(grads.ntokens, expect_tokens)
    assert np.all(np.isfinite(grads.nll)) and np.all(grads.nll > 0)


def test_similarities_match_numpy(case, tmp_path):
    _, _, plan, _, grads = case
    matrices, quads = similarities(grads, plan)
    tables = plan.units()
    expected_quads = []
    for u in differentiable_units(plan):
        g = grads.unit_matrix(u).astype(np.float64)
        want = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in g] for a in g])
        np.testing.assert_allclose(matrices[u], want, atol=1e-12)
        for copy, members in enumerate(tables[u].groups()):
            for i, j in enumerate(members):
                for k in members[i + 1:]:
                    expected_quads.append(("/".join(u), copy, LANGS[j], LANGS[k]))
    assert [q[:4] for q in quads] == expected_quads
    for q in quads:
        assert q.cosine == matrices[tuple(q.unit.split("/"))][LANGS.index(q.lang_j), LANGS.index(q.lang_k)]
    path = tmp_path / "quadruplets.csv"
    write_quadruplets_csv(path, quads)
    assert path.read_text().splitlines()[0] == "unit,copy,lang_j,lang_k,cosine"
    back = read_quadruplets_csv(path)
    assert [q[:4] for q in back] == [q[:4] for q in quads]
    np.testing.assert_allclose([q.cosine for q in back], [q.cosine for q in quads], rtol=1e-8)


def test_split_plan_drops_pairs_across_copies(case):
    _, _, plan, _, grads = case
    _, quads = similarities(grads, plan)
    tables = plan.units()
    expected = sum(len(g) * (len(g) - 1) // 2 for u in differentiable_units(plan) for g in tables[u].groups())
    assert len(quads) == expected
    if not plan.is_shared:
        assert expected < 3 * len(differentiable_units(plan))
    assert all(isinstance(q, Quadruplet) for q in quads)


def test_encoder_runs_once_for_all_tasks(setup):
    """Inside the vmap the shared encoder sees only un-batched inputs: its convolutions keep batch B (not
    tasks × B) and appear once each (the forward pass only; nothing is differentiated through them)."""
    model, base, batches = setup
    plan = SharingPlan.shared(base, LANGS)
    fn = make_task_grad_fn(model, plan, base)
    jaxpr = jax.make_jaxpr(fn.step)(fn.init(), base, batches[0])
    convs = []

    def walk(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                convs.append(eqn.invars[0].aval.shape)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    assert len(convs) == model.config.num_conv_layers
    assert all(shape[0] == B for shape in convs), convs


def test_cosine_matrix_edge_cases():
    g = np.array([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]])
    np.testing.assert_allclose(cosine_matrix(g), [[1, 0, -1], [0, 1, 0], [-1, 0, 1]])


def test_rejects_batches_for_other_languages(setup):
    model, base, batches = setup
    plan = SharingPlan.shared(base, LANGS[:2])
    with pytest.raises(ValueError, match="references in 3 languages"):
        task_gradients(model, base, plan, batches[:1], progress=False)
