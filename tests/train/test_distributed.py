"""Start-up of multi-process runs (the runs themselves: test_multiprocess.py)."""
import numpy as np
import pytest

from mlst_jax.train import distributed


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)


def test_single_process_needs_no_initialization(monkeypatch):
    monkeypatch.setattr("jax.distributed.initialize", lambda *a: pytest.fail("must not initialize"))
    assert distributed.initialize() is False
    assert distributed.broadcast_flag(True) is True
    assert distributed.allgather({"x": np.arange(2)})["x"].tolist() == [[0, 1]]
    distributed.barrier("nothing to wait for")


def test_arguments_and_environment(monkeypatch):
    calls = []
    monkeypatch.setattr("jax.distributed.initialize", lambda *a: calls.append(a))
    assert distributed.initialize("10.0.0.1:1234", 4, 3)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "head:99")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distributed.initialize()
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    monkeypatch.delenv("JAX_PROCESS_ID")
    assert distributed.initialize(auto=True)  # the cluster supplies the rest
    assert calls == [("10.0.0.1:1234", 4, 3), ("head:99", 2, 1), (None, 2, None)]


@pytest.mark.parametrize("env,args,message", [
    ({"JAX_NUM_PROCESSES": "two"}, {"coordinator_address": "h:1"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ({}, {"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, r"process_id=2 must be in \[0, "),
])
def test_bad_settings(monkeypatch, env, args, message):
    monkeypatch.setattr("jax.distributed.initialize", lambda *a: pytest.fail("must not initialize"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        distributed.initialize(**args)
