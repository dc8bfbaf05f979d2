"""Optimizer construction and learning-rate schedules (fairseq semantics)."""
import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mlst_jax.train import optim


def fairseq_inverse_sqrt(num_updates, lr, warmup_updates, warmup_init_lr):
    """fairseq.optim.lr_scheduler.InverseSquareRootSchedule.step_update."""
    lr_step = (lr - warmup_init_lr) / warmup_updates
    decay_factor = lr * warmup_updates ** 0.5
    if num_updates < warmup_updates:
        return warmup_init_lr + num_updates * lr_step
    return decay_factor * num_updates ** -0.5


@pytest.mark.parametrize("warmup", [1, 4000, 10000])
def test_inverse_sqrt_matches_fairseq(warmup):
    schedule = optim.make_schedule({"lr": 2e-3, "warmup_updates": warmup})
    for step in sorted({0, 1, 7, warmup - 1, warmup, warmup + 1, 3 * warmup, 123_457}):
        expected = fairseq_inverse_sqrt(step, 2e-3, warmup, 1e-7)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step
    assert float(schedule(warmup)) == pytest.approx(2e-3)
    assert float(schedule(4 * warmup)) == pytest.approx(1e-3)


def test_constant_and_cosine_schedules():
    const = optim.make_schedule({"lr": 1e-3, "schedule": "constant", "warmup_updates": 10, "warmup_init_lr": 0.0})
    assert [float(const(s)) for s in (0, 5, 10, 10_000)] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])
    assert float(optim.make_schedule({"lr": 1e-3, "schedule": "constant"})(0)) == pytest.approx(1e-3)
    cos = optim.make_schedule({"lr": 1e-3, "schedule": "cosine", "warmup_updates": 10, "max_updates": 110,
                               "min_lr": 1e-5})
    assert float(cos(10)) == pytest.approx(1e-3)
    assert float(cos(60)) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2, rel=1e-5)
    assert float(cos(110)) == pytest.approx(1e-5)


def _params():
    return {"w": jnp.asarray(np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)), "b": jnp.ones((4,))}


def _grads(scale=1.0):
    return jax.tree.map(lambda p: scale * jnp.cos(3.0 * p + 0.5), _params())


def test_lr_in_state_follows_schedule_and_adam_step():
    cfg = {"lr": 1e-2, "warmup_updates": 4, "clip_norm": 0.0}
    tx, schedule = optim.make_optimizer(cfg), optim.make_schedule(cfg)
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update)
    for i in range(6):
        updates, state = update(_grads(), state, params)
        assert float(optim.current_lr(state)) == pytest.approx(float(schedule(i)), rel=1e-6)
        if i == 0:  # first Adam step: -lr * g / (|g| + eps) with bias correction
            g = _grads()
            expected = jax.tree.map(lambda x: -schedule(0) * x / (jnp.abs(x) + 1e-8), g)
            np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-5)
        params = optax.apply_updates(params, updates)
    assert math.isnan(float(optim.current_lr(optax.sgd(0.1).init(params))))


def test_clipping_and_decoupled_weight_decay():
    params = _params()
    clipped = optim.make_optimizer({"lr": 1e-3, "schedule": "constant", "clip_norm": 1.0})
    state = clipped.update(_grads(50.0), clipped.init(params), params)[1]
    mu = state[1].inner_state[0].mu  # (clip, injected adamw); adamw = (scale_by_adam, decay, scale)
    assert float(optax.tree.norm(mu)) == pytest.approx(0.1, rel=1e-5)  # (1 - b1) * clipped norm 1
    unclipped = optim.make_optimizer({"lr": 1e-3, "schedule": "constant", "clip_norm": 0})
    mu = unclipped.update(_grads(50.0), unclipped.init(params), params)[1].inner_state[0].mu
    assert float(optax.tree.norm(mu)) == pytest.approx(0.1 * float(optax.tree.norm(_grads(50.0))), rel=1e-5)

    decay = optim.make_optimizer({"lr": 1e-2, "schedule": "constant", "weight_decay": 0.1})
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = decay.update(zeros, decay.init(params), params)
    np.testing.assert_allclose(updates["w"], -1e-2 * 0.1 * params["w"], rtol=1e-6)


def test_grad_accum_averages_micro_batches():
    cfg = {"lr": 1e-3, "warmup_updates": 3, "betas": (0.8, 0.9)}
    params, g1, g2 = _params(), _grads(1.0), _grads(-0.3)
    accum = optim.make_optimizer(dict(cfg, grad_accum=2))
    state = accum.init(params)
    u1, state = accum.update(g1, state, params)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(u1))
    u2, state = accum.update(g2, state, params)
    plain = optim.make_optimizer(cfg)
    expected, _ = plain.update(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2), plain.init(params), params)
    for a, b in zip(jax.tree.leaves(u2), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    assert float(optim.current_lr(state)) == pytest.approx(1e-7)


def test_config_forms_and_errors():
    fields = {"lr": 5e-4, "warmup_updates": 10, "betas": (0.9, 0.98)}
    cd = ml_collections.ConfigDict(fields)
    ns = types.SimpleNamespace(**fields)
    params = _params()
    results = []
    for cfg in (fields, cd, ns):
        tx = optim.make_optimizer(cfg)
        results.append(tx.update(_grads(), tx.init(params), params)[0])
    for other in results[1:]:
        for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(other)):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="lr"):
        optim.make_optimizer({"warmup_updates": 10})
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.make_schedule({"lr": 1.0, "schedule": "triangular"})
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make_optimizer({"lr": 1.0, "optimizer": "sgd"})
    with pytest.raises(ValueError, match="warmup_updates"):
        optim.make_schedule({"lr": 1.0, "warmup_updates": 0})


def test_a_continued_run_restarts_its_schedule():
    """init.schedule = "restart": the schedule runs from the source's step as if it were step 0, a cosine decays
    over the updates left; before the start (never reached in training) its first learning rate applies."""
    c = ml_collections.ConfigDict({"optim": {"schedule": "cosine", "lr": 1e-3, "warmup_updates": 20,
                                             "warmup_init_lr": 1e-7, "min_lr": 1e-5, "grad_accum": 1},
                                   "train": {"max_updates": 1000}})
    fresh = optim.make_schedule({**c.optim.to_dict(), "max_updates": 100})
    restarted = optim.make_schedule({**c.optim.to_dict(), "max_updates": 100, "schedule_start": 900})
    for step in (900, 910, 920, 960, 999, 1000):
        assert float(restarted(step)) == pytest.approx(float(fresh(step - 900)))
    assert float(restarted(0)) == pytest.approx(1e-7)
    assert float(restarted(920)) == pytest.approx(1e-3) and float(restarted(1000)) == pytest.approx(1e-5)

    tx = optim.optimizer_of(c, schedule_start=900)  # what the trainer builds for a run continued from step 900
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    lrs = []
    for _ in range(3):
        _, state = tx.update({"w": jnp.ones(3)}, state, params)
        lrs.append(float(optim.current_lr(state)))
    assert lrs == pytest.approx([float(fresh(0))] * 3)  # a fresh state counts from 0, before the start
    c.train.max_updates = 900
    with pytest.raises(ValueError, match=r"train.max_updates=900 must be above the step the run continues from"):
        optim.optimizer_of(c, schedule_start=900)
    c.train.max_updates = 910
    with pytest.raises(ValueError, match=r"optim.warmup_updates=20 must be below the 10 updates this run continues"):
        optim.optimizer_of(c, schedule_start=900)
