"""make_optimizer with a trainable mask: frozen leaves get zero updates and have no optimizer state."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlst_jax.models.params import count_params
from mlst_jax.train import optim

CFG = {"lr": 1e-2, "schedule": "constant", "clip_norm": 1.0, "weight_decay": 0.01}


def _params():
    r = np.random.default_rng(0)
    return {"enc": {"w": jnp.asarray(r.normal(size=(6, 5)), jnp.float32), "b": jnp.asarray(r.normal(size=5))},
            "dec": {"w": jnp.asarray(r.normal(size=(5, 7)), jnp.float32), "ln": jnp.ones(7)}}


MASK = {"enc": {"w": False, "b": True}, "dec": {"w": True, "ln": False}}
TRAINED = 5 + 35


def _grads(i):
    r = np.random.default_rng(i + 1)
    # the frozen leaves carry huge gradients: clipping must not see them
    return {"enc": {"w": jnp.asarray(1e3 * r.normal(size=(6, 5)), jnp.float32), "b": jnp.asarray(r.normal(size=5))},
            "dec": {"w": jnp.asarray(r.normal(size=(5, 7)), jnp.float32), "ln": jnp.asarray(1e3 * r.normal(size=7))}}


def _sub(tree):
    return {"enc": {"b": tree["enc"]["b"]}, "dec": {"w": tree["dec"]["w"]}}


def _state_elements(state) -> int:
    """Scalars in the optimizer state's non-scalar leaves (moments, accumulated gradients)."""
    return sum(x.size for x in jax.tree.leaves(state) if jnp.ndim(x) > 0)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_state_exists_only_for_trained_leaves(grad_accum):
    cfg = {**CFG, "grad_accum": grad_accum}
    params = _params()
    n = sum(x.size for x in jax.tree.leaves(params))
    per_leaf = 2 if grad_accum == 1 else 3  # Adam mu, nu (+ MultiSteps' accumulated gradient)
    assert _state_elements(optim.make_optimizer(cfg).init(params)) == per_leaf * n
    assert _state_elements(optim.make_optimizer(cfg, trainable_mask=MASK).init(params)) == per_leaf * TRAINED
    assert count_params(params, MASK) == TRAINED
    assert count_params(params) == n


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_frozen_leaves_stay_and_trained_leaves_follow_the_plain_optimizer(grad_accum):
    cfg = {**CFG, "grad_accum": grad_accum}
    masked, plain = optim.make_optimizer(cfg, trainable_mask=MASK), optim.make_optimizer(cfg)
    params, sub = _params(), _sub(_params())
    state, sub_state = masked.init(params), plain.init(sub)
    update, sub_update = jax.jit(masked.update), jax.jit(plain.update)
    for i in range(4):
        updates, state = update(_grads(i), state, params)
        sub_updates, sub_state = sub_update(_sub(_grads(i)), sub_state, sub)
        assert float(jnp.abs(updates["enc"]["w"]).max()) == 0 and float(jnp.abs(updates["dec"]["ln"]).max()) == 0
        for a, b in zip(jax.tree.leaves(_sub(updates)), jax.tree.leaves(sub_updates)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
        moved = float(jnp.abs(updates["dec"]["w"]).max()) > 0
        assert moved == ((i + 1) % grad_accum == 0)
        params, sub = optax.apply_updates(params, updates), optax.apply_updates(sub, sub_updates)
        assert float(optim.current_lr(state)) == pytest.approx(1e-2)
    np.testing.assert_array_equal(params["enc"]["w"], _params()["enc"]["w"])
    np.testing.assert_array_equal(params["dec"]["ln"], _params()["dec"]["ln"])


def test_mask_edge_cases():
    params = _params()
    everything = jax.tree.map(lambda _: True, MASK)
    assert (jax.tree.structure(optim.make_optimizer(CFG, trainable_mask=everything).init(params))
            == jax.tree.structure(optim.make_optimizer(CFG).init(params)))
    with pytest.raises(ValueError, match="freezes every parameter"):
        optim.make_optimizer(CFG, trainable_mask=jax.tree.map(lambda _: False, MASK))
    with pytest.raises(ValueError, match="must hold Python or numpy bools"):
        optim.make_optimizer(CFG, trainable_mask=jax.tree.map(lambda _: jnp.asarray(True), MASK))


def test_clipping_sees_trained_leaves_only():
    tx = optim.make_optimizer(CFG, trainable_mask=MASK)
    params, g = _params(), _grads(0)
    state = tx.update(g, tx.init(params), params)[1]
    mu = [x for x in jax.tree.leaves(state) if jnp.ndim(x) > 0][:2]  # Adam's mu (dec/w, enc/b), then nu
    assert [m.shape for m in mu] == [(5, 7), (5,)]
    assert float(optax.tree.norm(_sub(g))) > 1.0  # so the clip (norm 1.0) applies
    assert float(optax.tree.norm(mu)) == pytest.approx(0.1, rel=1e-5)  # (1 - b1) · clipped norm
