"""The training loop of every model family, `train_and_evaluate(config, workdir)`, and the test-set evaluation of
a finished run (`evaluate`, on the average of its last checkpoints). The family (`model.family`) answers through `mlst_jax.train.tasks`; the loop never names a
model.

Workdir layout: `checkpoints/<step>/` (Orbax; see `checkpoint.py`), `vocab/spm.model` (S2T runs whose config
names no vocabulary), `metrics.jsonl` and `tb/` (see `metrics.py`), `config.json`.

A run starts, in this order: from its own latest checkpoint (exact resume: parameters, optimizer, dropout key,
data position); else from another run (`init.run`, S2T: re-laid out for this run's sharing plan); else from
pretrained parts (`init.*`, XMEF); else from scratch. `train.eval_every <= 0` turns evaluation during training
off.

Multi-process runs (see `distributed.py`): every process builds the same plan and feeds its own rows;
process 0 prepares missing TFDS data and trains the vocabulary first (then sends it to the others), and
evaluation gathers every process's hypotheses so all report the same BLEU.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlst_jax.sharing.plan import SharingPlan
from mlst_jax.train import config as cfglib
from mlst_jax.train import init_from, inputs
from mlst_jax.train import sharding as shd
from mlst_jax.train.checkpoint import Checkpointer, save_on_preemption
from mlst_jax.train.evaluation import Evaluator, put
from mlst_jax.train.metrics import MetricsWriter, check_finite, step_flops
from mlst_jax.train.optim import optimizer_of
from mlst_jax.train.run import Run, saved_plan
from mlst_jax.train.state import abstract_params as abstract_params_of
from mlst_jax.train.state import abstract_train_state, create_train_state, shardings_of, train_state_from_params
from mlst_jax.train.step import make_train_step
from mlst_jax.train.tasks import Task, get_task

__all__ = ["train_and_evaluate", "evaluate"]

logger = logging.getLogger(__name__)


def _start_plan(c, task: Task, ckpt: Checkpointer, model, tx, rng, example, mesh, base, vocab, workdir):
    """(plan, warm-start state or None, its data position or None): the plan of the latest checkpoint when there
    is one, else the plan this run starts with (and, with `init.run`, the state it continues from)."""
    latest = ckpt.latest_step()
    if latest is not None:
        return saved_plan(ckpt, latest, base, task.stream_names), None, None
    return init_from.start_plan_and_state(c, task.stream_names, model, tx, rng, example, mesh, base, vocab,
                                                 workdir, progress=c.train.progress and jax.process_index() == 0)


def _schedule_start(c, ckpt: Checkpointer) -> int:
    """The step the learning-rate schedule starts at: the one this run's checkpoints recorded; for a run continuing
    from `init.run` with `init.schedule = "restart"`, the source's step; else 0."""
    latest = ckpt.latest_step()
    if latest is not None:
        return ckpt.restore_json(latest, "schedule_start") or 0
    if c.init.run and c.init.schedule == "restart":
        with Run(c.init.run) as src:
            return src.latest_step
    return 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming exactly from its latest checkpoint) and returns the last
    train metrics and the final dev evaluation (`eval/nll`, `eval/bleu_<stream>`, `eval/bleu_avg`)."""
    c = ml_collections.ConfigDict(config.to_dict())
    workdir = Path(workdir)
    cfglib.validate(c, jax.device_count())
    task = get_task(c)
    workdir.mkdir(parents=True, exist_ok=True)

    # -- mesh -------------------------------------------------------------------------------------------
    mesh = shd.make_mesh(*cfglib.resolve_mesh(c, jax.device_count()))
    n_batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]

    # -- input ------------------------------------------------------------------------------------------
    train_sources = task.sources(c.data.train_split)
    vocab = task.load_vocab(workdir, train_sources)
    model_cfg = task.model_config(vocab)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(c.to_json_best_effort(indent=1))
    pipeline = inputs.train_pipeline(c, task, train_sources, vocab, n_batch_devices)
    example = task.batch_structs(pipeline.batch_shapes()[0])

    # -- model and optimizer ----------------------------------------------------------------------------
    ckpt = Checkpointer(workdir / "checkpoints", keep=c.train.keep_checkpoints)
    model = task.model(model_cfg)
    base = abstract_params_of(model, example)
    schedule_start = _schedule_start(c, ckpt)
    tx = optimizer_of(c, task.trainable_mask(base), schedule_start)
    rng = jax.random.PRNGKey(c.seed)

    # -- state: resume, else warm start, else pretrained parts, else scratch ---------------------------------
    plan, warm_state, warm_data = _start_plan(c, task, ckpt, model, tx, rng, example, mesh, base, vocab, workdir)
    logger.info("sharing plan: %s, %.2fM parameters", plan, plan.num_params(base) / 1e6)
    target = abstract_train_state(model, tx, rng, example, mesh, plan)
    state, last_saved = _initial_state(task, ckpt, pipeline, target, warm_state, warm_data, model, tx, rng, example,
                                       mesh, plan, model_cfg)
    start = int(jax.device_get(state.step))

    # -- step -------------------------------------------------------------------------------------------
    keys, batch_sharding, train_step = _train_step(task, model, tx, mesh, shardings_of(target), plan)
    schedule = init_from.IterativeSchedule.from_config(c)

    # -- eval -------------------------------------------------------------------------------------------
    evaluator = None
    if c.train.eval_every > 0:
        evaluator = Evaluator(c, task, vocab, model_cfg, c.data.eval_split, mesh, shd.param_shardings(base, mesh),
                              plan)

    # -- loop -------------------------------------------------------------------------------------------
    flops = _flops_per_step(c, task, pipeline, plan, train_step, target, batch_sharding, mesh)
    writer = MetricsWriter(workdir, total_steps=c.train.max_updates, initial_step=start,
                           peak_flops=c.train.peak_flops or None, flops_per_step=flops,
                           progress=c.train.progress, enabled=jax.process_index() == 0)
    preempt = save_on_preemption() if threading.current_thread() is threading.main_thread() else None
    results: dict[str, float] = {}
    step, last_eval = start, None

    def save():
        nonlocal last_saved
        if not bool(jax.device_get(_all_finite(state.params))):  # never let a diverged step replace a good one
            where = "none was saved" if last_saved is None else f"step {last_saved}"
            raise FloatingPointError(f"parameters are not finite at step {step}; the last good checkpoint is {where}")
        ckpt.save(state, data_state=pipeline.get_state(), config=c, sharing_plan=plan.to_json(),
                  schedule_start=schedule_start)
        last_saved = step

    try:
        while step < c.train.max_updates:
            batch = next(pipeline)
            state, metrics = train_step(state, put(batch, batch_sharding, keys))
            step += 1
            if step % c.train.log_every == 0 or step == c.train.max_updates:
                metrics = jax.device_get(metrics)
                check_finite(step, metrics["loss"], last_saved)
                metrics["frames"] = int(np.asarray(batch["feature_lengths"]).sum()) * jax.process_count()
                results.update({f"train/{k}": v for k, v in writer.write(step, metrics).items()})
            if schedule is not None and schedule.due(step) and step < c.train.max_updates:
                new_plan = schedule.next_plan(step, plan, base, lambda: init_from.gradient_similarities(
                    c, model, state.params, plan, vocab, out_dir=workdir / "analysis" / f"step_{step}"))
                if new_plan != plan:
                    (state, shardings), plan = _relayout(state, plan, new_plan, model, tx, rng, example, mesh), new_plan
                    keys, batch_sharding, train_step = _train_step(task, model, tx, mesh, shardings, plan)
                    if evaluator is not None:
                        evaluator.plan = None if plan.is_shared else plan
                    logger.info("step %d: differentiated to %s, %.2fM parameters", step, plan,
                                plan.num_params(base) / 1e6)
                    save()
            if step % c.train.checkpoint_every == 0 or step == c.train.max_updates:
                save()
            if evaluator is not None and (step % c.train.eval_every == 0 or step == c.train.max_updates):
                results.update(_evaluate(evaluator, state, writer, step))
                last_eval = step
            if preempt is not None and preempt.requested:
                logger.warning("preemption requested: saving step %d and stopping", step)
                if last_saved != step:
                    save()
                break
    finally:
        if preempt is not None:
            preempt.restore_handlers()
        ckpt.close()
        writer.close()
        pipeline.close()
    results["step"] = step
    results["preempted"] = bool(preempt is not None and preempt.requested)
    if last_eval is None:
        logger.info("no evaluation ran (already at step %d)", step)
    return results


def _initial_state(task: Task, ckpt: Checkpointer, pipeline, target, warm_state, warm_data, model, tx, rng, example,
                   mesh, plan: SharingPlan, model_cfg):
    """(TrainState, the step of the checkpoint it was restored from or None): the latest checkpoint of this run
    (and its data position), else the warm start (`init.run`), else the task's pretrained parts, else a fresh
    initialization."""
    restored = ckpt.restore_latest(target)
    if restored is not None:
        if restored.data_state is not None:
            pipeline.set_state(restored.data_state)
        logger.info("resumed from step %d", restored.step)
        return restored.state, restored.step
    if warm_state is not None:
        if warm_data is not None:
            try:
                pipeline.set_state(warm_data)
            except (ValueError, KeyError) as e:
                logger.warning("data position of init.run not restored (%s); starting the stream afresh", e)
        return warm_state, None
    pretrained = task.pretrained_params(model_cfg)
    if pretrained is None:
        return create_train_state(model, tx, rng, example, mesh, plan=plan), None
    return train_state_from_params(pretrained, tx, rng, target), None


def _train_step(task: Task, model, tx, mesh, state_shardings, plan: SharingPlan):
    """(batch keys, their shardings, the jitted train step) for `plan`."""
    keys = task.train_keys(plan.is_shared)
    batch_sharding = task.batch_shardings(mesh, keys)
    step = make_train_step(model, tx, mesh=mesh, state_shardings=state_shardings, batch_shardings=batch_sharding,
                           plan=None if plan.is_shared else plan, **task.step_options())
    return keys, batch_sharding, step


def _flops_per_step(c, task: Task, pipeline, plan: SharingPlan, train_step, target, batch_sharding, mesh):
    """The model FLOPs of one train step on the first batch shape, over all devices (None without
    `train.peak_flops`, or when XLA gives no count)."""
    if not c.train.peak_flops:
        return None
    structs = task.batch_structs(inputs.global_batch_shape(pipeline.batch_shapes()[0]), plan.is_shared)
    structs = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding[k]) for k, s in structs.items()}
    flops = step_flops(train_step, target, structs)
    return flops * mesh.devices.size if flops else None  # XLA counts one device's share


def _relayout(state, plan: SharingPlan, new_plan: SharingPlan, model, tx, rng, example, mesh):
    """(`state` re-laid out from `plan` to `new_plan`, the new plan's state shardings): new copies start from their
    parent copy, Adam moments included."""
    shardings = shardings_of(abstract_train_state(model, tx, rng, example, mesh, new_plan))
    state = state.replace(params=new_plan.transfer(state.params, plan),
                          opt_state=new_plan.transfer_opt_state(state.opt_state, plan, state.params))
    return jax.device_put(state, shardings), shardings


def _evaluate(evaluator: Evaluator, state, writer: MetricsWriter, step: int) -> dict[str, float]:
    """The dev evaluation at `step`, written and logged; `eval/…` results."""
    t0 = time.perf_counter()
    ev = evaluator(state.params)
    ev["seconds"] = time.perf_counter() - t0
    results = {f"eval/{k}": v for k, v in writer.write(step, ev, prefix="eval").items()}
    logger.info("step %d eval: %s", step, json.dumps({k: round(v, 3) for k, v in ev.items()}))
    return results


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


# -- after training --------------------------------------------------------------------------------------


def evaluate(config: ml_collections.ConfigDict, workdir: str | Path, split: str | None = None) -> dict[str, Any]:
    """Beam-search BLEU per stream and their mean (`avg`) on `split` (default `data.test_split`) with the average
    of the last `train.average_last` checkpoints and the run's vocabulary (XMEF adds the supervised and zero-shot
    averages and the X→Y matrix; a joint model `mt_<stream>`: its text path on the transcripts). The hypotheses and
    references go to `<workdir>/eval/<split>/<stream>.hyp` and `.ref`."""
    with Run(workdir, config) as run:
        c, task = run.config, run.task
        params = run.averaged_params(c.train.average_last)
        plan = run.plan()
        mesh = shd.make_mesh(*cfglib.resolve_mesh(c, jax.device_count()))
        split = split or c.data.test_split
        ev = Evaluator(c, task, run.vocab, run.model_config, split, mesh, None, plan)
        scores = ev(params, with_loss=False, write_to=Path(workdir) / "eval" / split)
    out = {k[len("bleu_"):]: v for k, v in scores.items() if k.startswith("bleu_")}
    mt = {f"mt_{k[len('mt_bleu_'):]}": v for k, v in scores.items() if k.startswith("mt_bleu_")}
    return {**out, **mt, **task.summarize({k: v for k, v in out.items() if k != "avg"}, split)}
