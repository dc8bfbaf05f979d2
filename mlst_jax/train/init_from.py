"""The plan a run starts with: its saved plan, initialization from another run's checkpoint (`mlst train --init
RUN`), gradient similarities on the multi-way set, and the iterative differentiation schedule.

A run initialized from RUN continues from RUN's latest checkpoint: its step, parameters, optimizer moments,
dropout key and data-iterator position, re-laid out for this run's plan (a new copy starts from its
parent copy, Adam moments included).

The optimizer state starts fresh (the parameters that both runs have are copied, the others keep their fresh
initialization, and the step is carried over) only where that is the point of the run: the parameter trees
differ (e.g. added adapters), this run trains a different parameter set than RUN (`finetune.trainable`, e.g.
an LNA variant of a fully trained model), or `init.reset_optimizer=True` asks for it. Otherwise a
carry-over that fails (e.g. a different `optim.grad_accum`, which changes the optimizer state's layout) is
an error naming RUN's checkpoint and the reason, never a silent fresh start.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mlst_jax.models.params import path_names
from mlst_jax.sharing.gradients import similarities, task_gradients, write_quadruplets_csv
from mlst_jax.sharing.plan import SharingPlan, base_shapes, transfer_leaf
from mlst_jax.sharing.strategies import (SCANNABLE, budget_reached, grad_plan, make_plan, parse_strategy, random_plan,
                                         splittable)
from mlst_jax.train.inputs import multiway_batches
from mlst_jax.train.run import Run
from mlst_jax.train.state import TrainState, abstract_train_state, create_train_state, shardings_of
from mlst_jax.train.tasks import get_task

__all__ = ["start_plan_and_state", "check_layer_layout", "gradient_similarities", "IterativeSchedule", "graft"]

logger = logging.getLogger(__name__)


def gradient_similarities(c, model, params: Any, plan: SharingPlan, vocab, out_dir: str | Path | None = None,
                          progress: bool = True) -> dict:
    """{unit: [n, n] cosine matrix} of per-task gradients on the config's multi-way aligned split
    (`sharing.multiway_split`, at most `sharing.multiway_max` utterances); writes `quadruplets.csv` into
    `out_dir` when given."""
    batches = multiway_batches(c, get_task(c), plan.langs, c.sharing.multiway_split, vocab,
                               c.sharing.multiway_batch_size, max_utterances=c.sharing.multiway_max or None)
    grads = task_gradients(model, params, plan, batches, progress=progress)
    matrices, quads = similarities(grads, plan)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_quadruplets_csv(Path(out_dir) / "quadruplets.csv", quads)
    logger.info("task gradients on %d multi-way utterances: %d units, %d quadruplets", grads.utterances,
                len(matrices), len(quads))
    return matrices


def _next_plan(c, start: SharingPlan, base: Any, similarity_fn) -> SharingPlan:
    kind, _, x = parse_strategy(c.sharing.strategy)
    if kind == "random":
        return random_plan(start, base, x, seed=c.sharing.seed)
    if kind == "grad":
        if budget_reached(start, base, x) or not splittable(start):
            return start  # no task gradients needed: nothing more will be split
        return grad_plan(start, base, x, similarity_fn())
    return make_plan(c.sharing.strategy, base, start.langs)


def start_plan_and_state(c, langs, model, tx, rng, example, mesh, base: Any, vocab, workdir: Path,
                         progress: bool = True):
    """(plan over the streams `langs`, initial TrainState or None, data-iterator state or None) of a run without
    checkpoints; `progress`: a progress bar over the task gradients when they are computed."""
    langs = tuple(langs)
    init = c.init.run
    if not init:
        if c.sharing.iterative_every:
            return SharingPlan.shared(base, langs), None, None
        if parse_strategy(c.sharing.strategy)[0] == "grad":
            raise ValueError(f"sharing.strategy={c.sharing.strategy}: gradient-guided sharing starts from a trained "
                             f"model; set init.run (mlst train --init RUN) or run mlst differentiate first")
        return make_plan(c.sharing.strategy, base, langs, seed=c.sharing.seed), None, None
    with Run(init) as src:
        return _continue(c, src, langs, model, tx, rng, example, mesh, base, vocab, workdir, progress)


def _continue(c, src: Run, langs, model, tx, rng, example, mesh, base: Any, vocab, workdir: Path, progress: bool):
    """start_plan_and_state for a run continuing from `src`'s latest checkpoint."""
    check_layer_layout(c, src.config)
    src_params, src_plan = src.params(), src.plan(langs=langs)
    src_base = base_shapes(src_params, src_plan)

    def sims():
        return gradient_similarities(c, model, jax.tree.map(jnp.asarray, src_params), src_plan, vocab,
                                     out_dir=workdir / "analysis", progress=progress)
    plan = _next_plan(c, src_plan, base, sims)
    logger.info("initializing from %s step %d with plan %s (%.2fM params)", src.workdir, src.latest_step, plan,
                plan.num_params(base) / 1e6)
    fresh = _fresh_optimizer_reason(c, src, src_base, base)
    if fresh is None:
        target = abstract_train_state(model, tx, rng, example, mesh, src_plan)
        try:
            r = src.restore(target)
        except Exception as e:  # noqa: BLE001 - whatever the reason, the run must not silently reset Adam
            where, diff = src.ckpt.directory / str(src.latest_step), _optimizer_diff(c, src.saved_config())
            raise ValueError(
                f"init.run={c.init.run}: the optimizer state of checkpoint {where} cannot be carried over to this "
                f"run ({type(e).__name__}: {_short(e)}){diff}. Use the source run's optimizer settings, or set "
                f"init.reset_optimizer=True to copy the parameters and step and start the optimizer state "
                f"fresh") from e
        state = TrainState(step=r.state.step, params=plan.transfer(r.state.params, src_plan),
                           opt_state=plan.transfer_opt_state(r.state.opt_state, src_plan, r.state.params),
                           rng=r.state.rng)
        shards = shardings_of(abstract_train_state(model, tx, rng, example, mesh, plan))
        return plan, jax.device_put(state, shards), r.data_state
    logger.info("optimizer state of %s not carried over (%s); it starts fresh", src.workdir, fresh)
    state = create_train_state(model, tx, rng, example, mesh, plan=plan)
    params = graft(jax.device_get(state.params), plan, src_params, src_plan)
    shards = shardings_of(state)
    params = jax.device_put(params, shards.params)
    opt_state = jax.jit(tx.init, out_shardings=shards.opt_state)(params)
    return plan, state.replace(step=jnp.asarray(src.latest_step, jnp.int32), params=params, opt_state=opt_state), None


def check_layer_layout(c, src_config) -> None:
    """ValueError unless a run of config `c` lays its layer stacks out as the run of `src_config` it continues
    (per layer, or stacked with `model.scan_layers`), under a plan that fits them."""
    theirs, mine = bool(src_config.model.get("scan_layers", False)), bool(c.model.scan_layers)
    if theirs != mine:
        raise ValueError(f"init.run={c.init.run}: that run was trained with model.scan_layers={theirs}, this run "
                         f"has model.scan_layers={mine}; set it to the run's")
    if mine and parse_strategy(c.sharing.strategy)[0] not in SCANNABLE:
        raise ValueError(f"init.run={c.init.run}: sharing.strategy={c.sharing.strategy!r} splits single layers, "
                         f"which a run trained with model.scan_layers=True does not have; train the shared model "
                         f"with model.scan_layers=False")


def _trainable(config) -> str:
    """`finetune.trainable` of a config (a saved config.json dict or a ConfigDict)."""
    return config["finetune"]["trainable"]


def _fresh_optimizer_reason(c, src: Run, src_base: Any, base: Any) -> str | None:
    """Why the optimizer state of `src` is not to be carried over to a run of config `c` (None: it is)."""
    if c.init.reset_optimizer:
        return "init.reset_optimizer=True"
    if jax.tree.structure(src_base) != jax.tree.structure(base):
        mine, theirs = ({"/".join(path_names(p)) for p, _ in jax.tree_util.tree_flatten_with_path(t)[0]}
                        for t in (base, src_base))
        added, removed = sorted(mine - theirs), sorted(theirs - mine)
        return (f"the parameter trees differ: {len(added)} leaves only in this run (e.g. {added[:2]}), "
                f"{len(removed)} only in the source (e.g. {removed[:2]})")
    src_config = src.saved_config()
    if src_config is not None and _trainable(src_config) != _trainable(c):
        return (f"this run trains finetune.trainable={_trainable(c)!r}, the source run trained "
                f"{_trainable(src_config)!r}")
    return None


def _optimizer_diff(c, src_config: dict | None) -> str:
    """'; the optimizer settings differ: optim.grad_accum 1 -> 2' (empty when they do not, or are unknown)."""
    if not src_config or "optim" not in src_config:
        return ""
    old, new = src_config["optim"], c.optim.to_dict()
    diffs = [f"optim.{k} {_plain(old.get(k))} -> {_plain(v)}" for k, v in new.items()
             if _plain(old.get(k)) != _plain(v)]
    return f"; the optimizer settings differ: {', '.join(diffs)}" if diffs else ""


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _short(e: Exception, limit: int = 400) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def graft(fresh: Any, plan: SharingPlan, src_params: Any, src_plan: SharingPlan) -> Any:
    """`fresh` (stored under `plan`) with every leaf that `src_params` (stored under `src_plan`) also has
    replaced by the source's values, re-laid out for `plan`."""
    flat_src = traverse_util.flatten_dict(src_params)
    src_tables = {n: t for n, t in src_plan.leaves()}
    tables = {n: t for n, t in plan.leaves()}
    out, missing = {}, []
    for name, x in traverse_util.flatten_dict(fresh).items():
        if name in flat_src:
            y = np.asarray(transfer_leaf(jnp.asarray(flat_src[name]), src_tables[name], tables[name]))
            if y.shape != x.shape:
                raise ValueError(f"{'/'.join(name)}: shape {y.shape} in the source run, {x.shape} in this run")
            out[name] = y
        else:
            out[name], _ = x, missing.append("/".join(name))
    if missing:
        logger.info("parameters not in the source run (fresh initialization): %s", ", ".join(missing[:8]) +
                    (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    return traverse_util.unflatten_dict(out)


class IterativeSchedule:
    """Differentiation during training (`sharing.iterative_every` = K > 0 with a grad@X strategy): every K
    steps, the task gradients of the current model on the multi-way set split the least similar units until
    the size reaches round r's budget 1 + (X - 1) * r / R (R = `sharing.iterative_rounds`), so the model
    reaches X after R rounds."""

    def __init__(self, every: int, rounds: int, multiple: float):
        if every < 1 or rounds < 1:
            raise ValueError(f"sharing.iterative_every={every} and sharing.iterative_rounds={rounds} must be >= 1")
        self.every, self.rounds, self.multiple = every, rounds, multiple

    @classmethod
    def from_config(cls, c) -> "IterativeSchedule | None":
        every = c.sharing.iterative_every
        if not every:
            return None
        kind, _, x = parse_strategy(c.sharing.strategy)
        if kind != "grad":
            raise ValueError(f"sharing.iterative_every needs a grad@X strategy, got {c.sharing.strategy!r}")
        return cls(every, c.sharing.iterative_rounds, x)

    def due(self, step: int) -> bool:
        return step % self.every == 0 and step // self.every <= self.rounds

    def budget(self, step: int) -> float:
        r = min(step // self.every, self.rounds)
        return 1.0 + (self.multiple - 1.0) * r / self.rounds

    def next_plan(self, step: int, plan: SharingPlan, base: Any, similarity_fn) -> SharingPlan:
        x = self.budget(step)
        if budget_reached(plan, base, x) or not splittable(plan):
            return plan
        return grad_plan(plan, base, x, similarity_fn())
