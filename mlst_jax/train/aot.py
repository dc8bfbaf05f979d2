"""Ahead-of-time compilation of the train step for a mesh: memory and FLOPs without data or parameters.

`compile_train_step(config, mesh="data=2,fsdp=2,tensor=2")` builds the abstract TrainState (ShapeDtypeStructs
carrying their shardings, nothing allocated), takes the batch shapes from the config's buckets (no data read:
one shape per frame bucket at the longest token bucket, see `batch_shapes.static_batch_shapes`), lowers and
compiles the jitted train step for each chosen shape and reports, per device, XLA's memory analysis
(argument, output, temporary and aliased bytes; `peak_bytes` = argument + output - alias + temp) and its
FLOP count (per device, and times the device count). The mesh must match the devices of this machine; on CPU,
fake them with `XLA_FLAGS=--xla_force_host_platform_device_count=N`.

Which shape needs the most memory depends on the model: the largest frame bucket has the fewest, longest
rows (encoder attention is quadratic in length), the smallest the most rows (decoder logits scale with rows
x tokens x vocabulary). By default the smallest and the largest are compiled, both with the longest token
bucket; short utterances rarely have long targets, so pass `tokens` for a realistic small-bucket figure.

`grad@X` plans depend on gradients of a trained model; they are compiled as `random@X`, which has the same
size budget.
"""
from __future__ import annotations

import math
import re
import time
from typing import Any, Sequence

import jax
import ml_collections

from mlst_jax.data import batch_shapes as shapes
from mlst_jax.sharing.strategies import make_plan, parse_strategy
from mlst_jax.train import config as cfglib
from mlst_jax.train import sharding as shd
from mlst_jax.train.inputs import global_batch_shape, local_batch_devices
from mlst_jax.train.optim import optimizer_of
from mlst_jax.train.state import abstract_params, abstract_train_state, shardings_of
from mlst_jax.train.step import make_train_step
from mlst_jax.train.tasks import get_task

__all__ = ["parse_mesh", "compile_train_step"]

_MESH_ITEM = re.compile(r"^(data|fsdp|tensor)=(-1|[1-9][0-9]*)$")


def parse_mesh(spec: str) -> dict[str, int]:
    """"data=2,fsdp=2,tensor=2" -> {"data": 2, "fsdp": 2, "tensor": 2}; omitted axes keep the config's value."""
    out: dict[str, int] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        m = _MESH_ITEM.match(item)
        if not m:
            raise ValueError(f"--mesh {spec!r}: {item!r} is not AXIS=SIZE with AXIS in data, fsdp, tensor and "
                             f"SIZE >= 1 (data may be -1: the devices the other axes leave)")
        if m.group(1) in out:
            raise ValueError(f"--mesh {spec!r}: axis {m.group(1)} given twice")
        out[m.group(1)] = int(m.group(2))
    if not out:
        raise ValueError(f"--mesh {spec!r} names no axis")
    return out


def _plan(c, task, base):
    kind, _, x = parse_strategy(c.sharing.strategy)
    strategy = f"random@{x}" if kind == "grad" else c.sharing.strategy
    return make_plan(strategy, base, task.stream_names, seed=c.sharing.seed)


def _memory(compiled) -> dict[str, int] | None:
    m = compiled.memory_analysis()
    if m is None:
        return None
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return {f"{k}_bytes": v for k, v in out.items()}


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def _budget_override(pcfg: shapes.PipelineConfig, frames: Sequence[int], batch_devices: int) -> str:
    """The `--config.data.max_frames_per_batch` override that lets every bucket in `frames` hold one row per
    language group and batch device: the config's budget times the batch devices (fairseq's `--max-tokens` is
    per GPU), or the minimum if that is larger."""
    groups = (pcfg.n_groups or len(pcfg.langs)) if pcfg.stratify else 1
    need = max(frames) * groups * batch_devices
    scaled = pcfg.max_frames_per_batch * batch_devices
    if scaled >= need:
        why = (f"the config's {pcfg.max_frames_per_batch} frames for each of the {batch_devices} batch devices "
               f"(data x fsdp of this process), as fairseq's per-GPU --max-tokens")
    else:
        scaled = need
        why = f"{max(frames)} frames x {groups} language groups x {batch_devices} batch devices"
    return f"--config.data.max_frames_per_batch={scaled}, i.e. {why}"


def compile_train_step(config: ml_collections.ConfigDict, mesh: str | dict[str, int] | None = None,
                       frames: Sequence[int] | None = None, tokens: int | None = None) -> dict[str, Any]:
    """Compiles the train step of `config` on `mesh` (a spec like "data=2,fsdp=2,tensor=2" or a dict; default
    the config's `mesh`) for frame buckets `frames` (default the smallest and largest) with targets of
    `tokens` (rounded up to a token bucket; default the longest allowed) and returns
    `{"mesh", "devices", "params", "state_bytes", "state_bytes_per_device", "shapes": [{"features", "tokens",
    "memory", "flops_per_device", "flops", "compile_seconds"}, ...]}`: memory per device (`alias_bytes`: the donated
    state, all of `state_bytes_per_device` but inputs the step never reads, such as a scheduled learning rate
    that `optax.inject_hyperparams` recomputes); XLA counts one device's FLOPs (`flops` is that times the number of devices)."""
    c = ml_collections.ConfigDict(config.to_dict())
    if mesh:
        c.mesh.update(parse_mesh(mesh) if isinstance(mesh, str) else dict(mesh))
    n = jax.device_count()
    cfglib.validate(c, check_paths=False)
    try:
        data, fsdp, tensor = cfglib.resolve_mesh(c, n)
    except ValueError as e:
        hint = " (on CPU, fake devices with XLA_FLAGS=--xla_force_host_platform_device_count=N)" \
            if jax.default_backend() == "cpu" else ""
        raise ValueError(f"{e}{hint}") from None
    mesh_ = shd.make_mesh(data, fsdp, tensor)

    task = get_task(c)
    pcfg = task.pipeline_config(train=True)
    if not frames:
        buckets = shapes.train_frame_buckets(pcfg)
        frames = sorted({buckets[0], buckets[-1]})
    batch_devices = local_batch_devices(data * fsdp)
    try:
        chosen = shapes.static_batch_shapes(pcfg, num_devices=batch_devices, frames=frames, tokens=tokens)
    except ValueError as e:
        if "cannot hold" not in str(e):
            raise
        raise ValueError(f"{e}. Fix: {_budget_override(pcfg, frames, batch_devices)}") from None

    model = task.model(task.model_config(None))
    example = task.batch_structs(chosen[0])
    base = abstract_params(model, example)
    tx = optimizer_of(c, task.trainable_mask(base))
    rng = jax.eval_shape(lambda: jax.random.PRNGKey(c.seed))
    plan = _plan(c, task, base)
    target = abstract_train_state(model, tx, rng, example, mesh_, plan)
    keys = task.train_keys(plan.is_shared)
    batch_shardings = task.batch_shardings(mesh_, keys)
    step = make_train_step(model, tx, mesh=mesh_, state_shardings=shardings_of(target),
                           batch_shardings=batch_shardings, plan=None if plan.is_shared else plan,
                           **task.step_options())

    report: dict[str, Any] = {
        "mesh": {"data": data, "fsdp": fsdp, "tensor": tensor}, "devices": n, "backend": jax.default_backend(),
        "sharing": c.sharing.strategy, "params": int(sum(math.prod(x.shape) for x in jax.tree.leaves(target.params))),
        "state_bytes": int(sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(target))),
        "state_bytes_per_device": int(sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                                          for x in jax.tree.leaves(target))),
        "shapes": [],
    }
    for shape in chosen:
        global_shape = global_batch_shape(shape)
        structs = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_shardings[k])
                   for k, s in task.batch_structs(global_shape, plan.is_shared).items()}
        t0 = time.perf_counter()
        compiled = step.lower(target, structs).compile()
        flops = _flops(compiled)
        report["shapes"].append({"features": list(global_shape.features), "tokens": list(global_shape.tokens),
                                 "memory": _memory(compiled), "flops_per_device": flops,
                                 "flops": None if flops is None else flops * n,
                                 "compile_seconds": round(time.perf_counter() - t0, 2)})
    peaks = [shape["memory"]["peak_bytes"] for shape in report["shapes"] if shape["memory"]]
    report["peak_bytes_per_device"] = max(peaks) if peaks else None
    return report
