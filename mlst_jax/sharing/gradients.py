"""Per-task gradients on multi-way aligned data and their cosine similarities (seed 000 §3.3).

A task is a target language. On a multi-way batch (the same audio `features` [B, T, F] / `feature_lengths`
[B] with references in every language: `decoder_input`, `target`, `loss_weights` [n, B, U]) one jitted
function computes every task's gradient of the plain token-level cross-entropy (no label smoothing, no
dropout) with `jax.vmap` over tasks. Task t runs with the copies its language uses (`SharingPlan.gather`
with languages 0..n-1), and gradients are taken only w.r.t. the leaves of the differentiable units (the
decoder layers, `strategies.differentiable_units`). A shared encoder therefore sees only un-batched inputs
inside the vmap and is computed once for all tasks.

The function accumulates, over batches, the gradient of each task's summed NLL and its token count;
`task_gradients` divides them into per-task mean gradients. `similarities` turns those into one [n, n]
cosine matrix per unit (all leaves of a unit, kernel and bias, flattened and concatenated) and the
quadruplets (unit, copy, lang_j, lang_k, cosine) of the language pairs that share a copy of the unit.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mlst_jax.models.losses import label_smoothed_nll
from mlst_jax.models.params import path_names
from mlst_jax.sharing.plan import SharingPlan, Unit, unit_of
from mlst_jax.sharing.strategies import differentiable_units

__all__ = ["TaskGradients", "Quadruplet", "GradFn", "make_task_grad_fn", "task_gradients", "similarities",
           "cosine_matrix", "write_quadruplets_csv", "read_quadruplets_csv", "QUADRUPLET_FIELDS"]

Batch = Mapping[str, Any]
QUADRUPLET_FIELDS = ("unit", "copy", "lang_j", "lang_k", "cosine")


@dataclasses.dataclass
class TaskGradients:
    """Per-task mean gradients: `grads[unit][leaf]` is [n, *leaf shape] (row t: task `langs[t]`, taken w.r.t.
    the copy that language uses); `ntokens` [n] target tokens and `nll` [n] mean NLL per token of each task."""

    langs: tuple[str, ...]
    grads: dict[Unit, dict[str, np.ndarray]]
    ntokens: np.ndarray
    nll: np.ndarray
    utterances: int

    def unit_matrix(self, unit: Unit) -> np.ndarray:
        """[n, D]: the unit's leaves flattened and concatenated per task (leaves in pytree order)."""
        leaves = self.grads[tuple(unit)]
        return np.concatenate([g.reshape(len(self.langs), -1) for g in leaves.values()], axis=1)


class Quadruplet(NamedTuple):
    """The cosine similarity of tasks `lang_j` and `lang_k` on copy `copy` of `unit` ('decoder/layers_0/fc1')."""

    unit: str
    copy: int
    lang_j: str
    lang_k: str
    cosine: float


@dataclasses.dataclass
class GradFn:
    """A jitted `(acc, params, batch) -> acc` (see `make_task_grad_fn`) and what it needs around it."""

    step: Callable[[Any, Any, Batch], Any]
    plan: SharingPlan
    leaf_names: list[tuple[str, ...]]  # paths of the differentiated leaves, in pytree order
    leaf_shapes: list[tuple[int, ...]]  # their base (one-copy) shapes

    def init(self) -> dict[str, Any]:
        """A zero accumulator: `grads` (one [n, *shape] sum per leaf), `nll` [n], `ntokens` [n], `utterances`."""
        n = len(self.plan.langs)
        return {"grads": [jnp.zeros((n,) + s, jnp.float32) for s in self.leaf_shapes],
                "nll": jnp.zeros(n, jnp.float32), "ntokens": jnp.zeros(n, jnp.float32),
                "utterances": jnp.zeros((), jnp.float32)}


def make_task_grad_fn(model, plan: SharingPlan, params: Any, units: Iterable[Unit] | None = None) -> GradFn:
    """The jitted per-task gradient accumulator of `model` (an `S2TTransformer`) under `plan`.

    `params` are the stored parameters (or their ShapeDtypeStructs; only the structure is read). `units`
    defaults to `differentiable_units(plan)`. `step(acc, params, batch)` adds, for every task t, the gradient
    of Σ loss_weights · NLL (task t's references) w.r.t. the units' leaves to `acc["grads"]` (each [n, ...]),
    and the NLL sum, weighted token count and valid utterance count to `acc["nll"]`, `acc["ntokens"]`,
    `acc["utterances"]`. A batch's optional `valid` [B] multiplies the loss weights. `acc` is donated.
    """
    n = len(plan.langs)
    units = set(tuple(u) for u in (differentiable_units(plan) if units is None else units))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [path_names(p) for p, _ in flat]
    tables = [t for _, t in plan.leaves()]
    if [n_ for n_, _ in plan.leaves()] != names:
        raise ValueError("the parameters' structure does not match the sharing plan's")
    diff = [i for i, nm in enumerate(names) if unit_of(nm) in units]
    if not diff:
        raise ValueError("no parameter leaf belongs to the requested units")
    missing = units - {unit_of(names[i]) for i in diff}
    if missing:
        raise ValueError(f"units not in the model: {sorted('/'.join(u) for u in missing)[:5]}")
    rest = sorted(set(range(len(names))) - set(diff))
    shapes = [tuple(flat[i][1].shape[1:] if tables[i].num_copies > 1 else flat[i][1].shape) for i in diff]

    def task_loss(diff_leaves, rest_leaves, dec_in, target, weights, features, lengths):
        leaves = [None] * len(names)
        for i, x in zip(diff, diff_leaves):
            leaves[i] = x
        for i, x in zip(rest, rest_leaves):
            leaves[i] = x
        p = jax.tree_util.tree_unflatten(treedef, leaves)
        logits = model.apply({"params": p}, features, lengths, dec_in, deterministic=True)
        _, nll = label_smoothed_nll(logits, target, weights, 0.0)
        return nll

    def step(acc, params, batch):
        gathered, axes = plan.gather(params, jnp.arange(n))
        g_leaves, a_leaves = jax.tree.leaves(gathered), jax.tree.leaves(axes, is_leaf=lambda x: x is None)
        valid = batch["valid"].astype(jnp.float32) if "valid" in batch else jnp.ones(batch["feature_lengths"].shape)
        weights = batch["loss_weights"].astype(jnp.float32) * valid[None, :, None]
        per_task = jax.vmap(jax.value_and_grad(task_loss),
                            in_axes=([a_leaves[i] for i in diff], [a_leaves[i] for i in rest], 0, 0, 0, None, None))
        nll, grads = per_task([g_leaves[i] for i in diff], [g_leaves[i] for i in rest], batch["decoder_input"],
                              batch["target"], weights, batch["features"], batch["feature_lengths"])
        return {"grads": [a + g for a, g in zip(acc["grads"], grads)], "nll": acc["nll"] + nll,
                "ntokens": acc["ntokens"] + weights.sum(axis=(1, 2)), "utterances": acc["utterances"] + valid.sum()}

    return GradFn(jax.jit(step, donate_argnums=(0,)), plan, [names[i] for i in diff], shapes)


def task_gradients(model, params: Any, plan: SharingPlan, batches: Iterable[Batch], progress: bool = True,
                   units: Iterable[Unit] | None = None) -> TaskGradients:
    """Every task's mean gradient (per target token) over `batches` (multi-way batches, e.g. from
    `mlst_jax.data.multiway_pipeline`) w.r.t. the differentiable units' leaves; a tqdm bar when `progress`."""
    params = jax.device_put(params)
    fn = make_task_grad_fn(model, plan, params, units)
    acc = fn.init()
    total = len(batches) if hasattr(batches, "__len__") else None
    keys = ("features", "feature_lengths", "decoder_input", "target", "loss_weights", "valid")
    n = len(plan.langs)
    for batch in tqdm(batches, total=total, desc="task gradients", unit="batch", disable=not progress):
        if np.shape(batch["target"])[0] != n:
            raise ValueError(f"batch has references in {np.shape(batch['target'])[0]} languages, the plan {n}")
        batch = {k: batch[k] for k in keys if k in batch}
        batch.setdefault("valid", np.ones(np.shape(batch["feature_lengths"]), np.int32))  # one jit signature
        acc = fn.step(acc, params, batch)
    acc = jax.device_get(acc)
    ntokens = np.asarray(acc["ntokens"], np.float64)
    if not np.all(ntokens > 0):
        empty = [l for l, c in zip(plan.langs, ntokens) if c <= 0]
        raise ValueError(f"no target tokens for {empty}: the gradients are undefined (empty multi-way set?)")
    grads: dict[Unit, dict[str, np.ndarray]] = {}
    for name, g in zip(fn.leaf_names, acc["grads"]):
        scale = (1.0 / ntokens).reshape((n,) + (1,) * (g.ndim - 1))
        grads.setdefault(unit_of(name), {})[name[-1]] = (g * scale).astype(np.float32)
    return TaskGradients(plan.langs, grads, ntokens, np.asarray(acc["nll"], np.float64) / ntokens,
                         int(acc["utterances"]))


def cosine_matrix(g: np.ndarray) -> np.ndarray:
    """[n, n] cosine similarities of the rows of `g` [n, D] (float64). A zero row has similarity 0 with
    every other row; the diagonal is 1."""
    g = np.asarray(g, np.float64)
    norms = np.linalg.norm(g, axis=1)
    dots = g @ g.T
    denom = np.outer(norms, norms)
    cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    np.fill_diagonal(cos, 1.0)
    return np.clip(cos, -1.0, 1.0)


def similarities(grads: TaskGradients, plan: SharingPlan) -> tuple[dict[Unit, np.ndarray], list[Quadruplet]]:
    """({unit: [n, n] cosine matrix}, quadruplets of every pair j < k sharing a copy of the unit).

    The matrices feed `strategies.grad_plan(similarity=...)`; the quadruplets follow the units in pytree
    order, then copies, then pairs.
    """
    if tuple(grads.langs) != tuple(plan.langs):
        raise ValueError(f"gradients are over {grads.langs}, the plan over {plan.langs}")
    tables = plan.units()
    matrices: dict[Unit, np.ndarray] = {}
    quads: list[Quadruplet] = []
    for unit in grads.grads:
        cos = matrices[unit] = cosine_matrix(grads.unit_matrix(unit))
        name = "/".join(unit)
        for copy, members in enumerate(tables[unit].groups()):
            for a, j in enumerate(members):
                for k in members[a + 1:]:
                    quads.append(Quadruplet(name, copy, plan.langs[j], plan.langs[k], float(cos[j, k])))
    return matrices, quads


def write_quadruplets_csv(path: str | os.PathLike, quadruplets: Sequence[Quadruplet]) -> None:
    """CSV with header `unit,copy,lang_j,lang_k,cosine`, one row per quadruplet."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(QUADRUPLET_FIELDS)
        for q in quadruplets:
            w.writerow((q.unit, q.copy, q.lang_j, q.lang_k, f"{q.cosine:.9g}"))


def read_quadruplets_csv(path: str | os.PathLike) -> list[Quadruplet]:
    """Quadruplets from a file `write_quadruplets_csv` wrote."""
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        if tuple(r.fieldnames or ()) != QUADRUPLET_FIELDS:
            raise ValueError(f"{path}: expected columns {','.join(QUADRUPLET_FIELDS)}, got {r.fieldnames}")
        return [Quadruplet(row["unit"], int(row["copy"]), row["lang_j"], row["lang_k"], float(row["cosine"]))
                for row in r]
