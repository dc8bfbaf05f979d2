import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mlst_jax.train.checkpoint import Checkpointer, save_on_preemption
from mlst_jax.train.sharding import make_mesh
from mlst_jax.train.state import TrainState


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(data=2, fsdp=4)


def make_state(mesh, step, seed=0):
    rng = np.random.default_rng(seed)
    params = {"dense": {"kernel": jnp.asarray(rng.standard_normal((8, 16)), jnp.float32),
                        "bias": jnp.asarray(rng.standard_normal(16), jnp.float32)}}
    tx = optax.adam(1e-3)
    state = TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.key_data(jax.random.key(seed)))
    state = state.replace(opt_state=jax.tree.map(lambda x: x + 0.5 if x.dtype == jnp.float32 else x,
                                                 state.opt_state))

    def put(x):
        spec = P("fsdp") if x.ndim and x.shape[0] % 4 == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))
    return jax.tree.map(put, state)


def abstract(state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def assert_bitwise(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_bitwise_with_shardings(tmp_path, mesh):
    ckpt = Checkpointer(tmp_path, keep=3)
    state = make_state(mesh, 7)
    data_state = {"next_index": 123, "nested": {"a": [1, 2]}}
    assert ckpt.save(state, data_state=data_state, config={"seed": 3, "model": {"arch": "x"}})
    ckpt.wait()
    r = ckpt.restore_latest(abstract(state))
    assert r.step == 7 and r.data_state == data_state and r.config == {"seed": 3, "model": {"arch": "x"}}
    assert r.sharing_plan is None
    assert_bitwise(r.state, state)
    for x, y in zip(jax.tree.leaves(r.state), jax.tree.leaves(state)):
        assert x.sharding == y.sharding
    np.testing.assert_array_equal(np.asarray(ckpt.restore_params(7)["dense"]["kernel"]),
                                  np.asarray(state.params["dense"]["kernel"]))
    ckpt.close()


def test_keep_n(tmp_path, mesh):
    ckpt = Checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        ckpt.save(make_state(mesh, step, seed=step))
    ckpt.wait()
    assert ckpt.all_steps() == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3", "4"]
    ckpt.close()


def test_corrupt_latest_falls_back(tmp_path, mesh, caplog):
    ckpt = Checkpointer(tmp_path, keep=3)
    good, bad = make_state(mesh, 10, seed=1), make_state(mesh, 20, seed=2)
    ckpt.save(good, data_state={"i": 10})
    ckpt.save(bad, data_state={"i": 20})
    ckpt.close()
    for root, _, files in os.walk(tmp_path / "20" / "state"):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) // 3)
    ckpt = Checkpointer(tmp_path, keep=3)
    with caplog.at_level("WARNING"):
        r = ckpt.restore_latest(abstract(good))
    assert r.step == 10 and r.data_state == {"i": 10}
    assert_bitwise(r.state, good)
    assert "step 20" in caplog.text and (tmp_path / "20.corrupt").exists()
    assert ckpt.all_steps() == [10]
    ckpt.save(make_state(mesh, 20, seed=3))  # the step number is free again
    ckpt.close()


def test_empty_directory_restores_none(tmp_path, mesh):
    ckpt = Checkpointer(tmp_path)
    assert ckpt.restore_latest(abstract(make_state(mesh, 0))) is None
    ckpt.close()


def test_iterator_state_round_trip(tmp_path, mesh):
    import grain

    ds = grain.MapDataset.range(50).shuffle(seed=4).map(lambda i: i * 2).to_iter_dataset()
    it = iter(ds)
    for _ in range(7):
        next(it)
    ckpt = Checkpointer(tmp_path, keep=1)
    ckpt.save(make_state(mesh, 7), data_state=it.get_state())
    expected = [next(it) for _ in range(5)]
    ckpt.close()
    r = Checkpointer(tmp_path).restore_latest(abstract(make_state(mesh, 0)))
    it2 = iter(ds)
    it2.set_state(r.data_state)
    assert [next(it2) for _ in range(5)] == expected


def test_preemption_flag():
    flag = save_on_preemption()
    try:
        assert not flag.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested
    finally:
        flag.restore_handlers()
