"""Multi-process runs: `jax.distributed` start-up and the host-side collectives the trainer needs.

Every process runs the same program on its own devices; `jax.distributed.initialize` connects them. The
coordinator (process 0's `host:port`), the number of processes and this process's index come from flags, from
`JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, or from the cluster (SLURM, Cloud TPU,
Open MPI, Kubernetes: JAX detects those; a TPU pod needs no arguments at all). On CPU the processes talk
through gloo collectives.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["initialize", "barrier", "broadcast_flag", "broadcast_file", "allgather", "host_arrays"]


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
    """Calls `jax.distributed.initialize` when a coordinator is known (argument or `JAX_COORDINATOR_ADDRESS`) or
    `auto` (cluster auto-detection); missing counts come from `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` or the
    cluster. Must run before anything touches a JAX device. Returns whether it initialized."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if coordinator_address is None and not auto:
        return False
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


def barrier(name: str) -> None:
    """Blocks until every process reached `name` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def broadcast_flag(value: bool) -> bool:
    """Process 0's `value` on every process."""
    if jax.process_count() == 1:
        return bool(value)
    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(value))))


def broadcast_file(path: str | Path) -> None:
    """Writes process 0's file `path` on every other process (atomically), for workdirs that are not shared."""
    if jax.process_count() == 1:
        return
    path = Path(path)
    first = jax.process_index() == 0
    data = np.frombuffer(path.read_bytes(), np.uint8) if first else np.zeros(0, np.uint8)
    n = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
    data = np.asarray(multihost_utils.broadcast_one_to_all(data if first else np.zeros(n, np.uint8)))
    if not first:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{jax.process_index()}")
        tmp.write_bytes(data.astype(np.uint8).tobytes())
        os.replace(tmp, path)


def allgather(tree: Any) -> Any:
    """Host arrays of equal shapes on every process -> stacked `[process_count, ...]` numpy arrays."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.asarray(x)[None], tree)
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=False))


def host_arrays(tree: Any) -> Any:
    """Global (possibly multi-process sharded) arrays -> full numpy arrays on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
