"""Gradient-guided differentiation of a trained run (`mlst differentiate`): split its least similar shared
parameters up to a size budget and write a run that `mlst train --init` continues."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from mlst_jax.sharing.plan import SharingPlan
from mlst_jax.sharing.strategies import budget_reached, parse_strategy
from mlst_jax.train import config as cfglib
from mlst_jax.train import sharding as shd
from mlst_jax.train.checkpoint import Checkpointer
from mlst_jax.train.init_from import start_plan_and_state
from mlst_jax.train.optim import optimizer_of
from mlst_jax.train.run import Run
from mlst_jax.train.state import abstract_params
from mlst_jax.train.tasks import get_task

__all__ = ["differentiate", "Differentiated"]

logger = logging.getLogger(__name__)


class Differentiated(NamedTuple):
    """What `differentiate` made: the plan, its size as a multiple of the shared model's, and whether the cap (every
    differentiable unit language-specific) stopped it short of the budget."""

    plan: SharingPlan
    multiple: float
    capped: bool


def differentiate(run: str | Path, out: str | Path, budget: float, *, multiway_split: str | None = None,
                  max_utterances: int | None = None, progress: bool = True) -> Differentiated:
    """Gradient-guided differentiation of run `run`'s latest checkpoint up to `budget` × the shared size.

    Writes `out` as a run directory (config.json, vocab, `checkpoints/<step>` holding the split parameters,
    the split Adam moments and the plan, and `analysis/quadruplets.csv` of the task gradients) that
    `mlst train --init OUT` continues from. A run already at the budget, or at the cap where no unit is left
    to split, is written unchanged (no task gradients are computed); a budget beyond the cap is a warning.
    `progress`: a progress bar over the task gradients.
    """
    run, out = Path(run), Path(out)
    if (out / "checkpoints").exists():
        raise ValueError(f"{out / 'checkpoints'} already exists")
    with Run(run) as src:
        c = ml_collections.ConfigDict(src.config.to_dict())
        vocab = src.vocab
    c.sharing.strategy, c.init.run = f"grad@{budget}", str(run)
    if multiway_split:
        c.sharing.multiway_split = multiway_split
    if max_utterances:
        c.sharing.multiway_max = int(max_utterances)
    parse_strategy(c.sharing.strategy)
    task = get_task(c)
    model_cfg = task.model_config(vocab)
    model = task.model(model_cfg)
    example = {"features": jax.ShapeDtypeStruct((1, 16, model_cfg.input_feat_per_channel), jnp.float32),
               "feature_lengths": jax.ShapeDtypeStruct((1,), jnp.int32),
               "decoder_input": jax.ShapeDtypeStruct((1, 4), jnp.int32)}
    mesh = shd.make_mesh(*cfglib.resolve_mesh(c, jax.device_count()))
    base = abstract_params(model, example)
    tx = optimizer_of(c, task.trainable_mask(base))
    out.mkdir(parents=True, exist_ok=True)
    plan, state, data_state = start_plan_and_state(c, task.stream_names, model, tx, jax.random.PRNGKey(c.seed),
                                                   example, mesh, base, vocab, out, progress=progress)
    c.init.run = ""
    ckpt = Checkpointer(out / "checkpoints", keep=None, async_save=False)
    ckpt.save(state, data_state=data_state, config=c, sharing_plan=plan.to_json())
    ckpt.close()
    if (run / "vocab").is_dir() and not (out / "vocab").exists():
        shutil.copytree(run / "vocab", out / "vocab")
    (out / "config.json").write_text(c.to_json_best_effort(indent=1))
    logger.info("differentiated %s -> %s: %s, %.2fM parameters", run, out, plan, plan.num_params(base) / 1e6)
    multiple = plan.num_params(base) / SharingPlan.shared(base, plan.langs).num_params(base)
    capped = not budget_reached(plan, base, budget)
    if capped:
        logger.warning("budget %gx not reached: every differentiable unit is language-specific at %.2fx (the cap "
                       "of this model)", budget, multiple)
    return Differentiated(plan, multiple, capped)
