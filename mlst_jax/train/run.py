"""A training run directory read back: its config, vocabulary, model, parameters and sharing plan at one step."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections

from mlst_jax.models.s2t_transformer import S2TTransformer, abstract_params
from mlst_jax.sharing.plan import SharingPlan
from mlst_jax.train.checkpoint import Checkpointer
from mlst_jax.train.tasks import get_task

__all__ = ["Run", "load_run"]


class Run(NamedTuple):
    """A training run's checkpoint: config (ConfigDict), vocabulary, model, stored params (host numpy), plan."""

    config: Any
    step: int
    vocab: Any
    model: Any
    params: Any
    plan: Any


def load_run(workdir: str | os.PathLike, step: int | None = None) -> Run:
    """The checkpoint `step` (default: the latest) of training run `workdir`, with its config (`config.json`
    or the checkpoint's), vocabulary, parameters and sharing plan (none saved: fully shared)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ValueError(f"{workdir}: no such run directory")
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise ValueError(f"{workdir} holds no checkpoints/ directory: not a training run")
    ckpt = Checkpointer(directory, keep=None, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise ValueError(f"{directory}: no checkpoints")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise ValueError(f"{directory}: no checkpoint for step {step}; saved steps: {steps}")
        path = workdir / "config.json"
        d = json.loads(path.read_text()) if path.is_file() else ckpt.restore_json(step, "config")
        if not d:
            raise ValueError(f"{workdir}: no config.json and no config saved with step {step}")
        c = ml_collections.ConfigDict(d)
        if not c.data.vocab and not (workdir / "vocab" / "spm.model").is_file():
            raise ValueError(f"{workdir}: the config names no vocabulary (data.vocab) and "
                             f"{workdir / 'vocab' / 'spm.model'} is missing")
        task = get_task(c)
        vocab = task.load_vocab(workdir)
        model_cfg = task.model_config(vocab)
        params = ckpt.restore_params(step)
        langs = tuple(c.data.tgt_langs)
        plan_json = ckpt.restore_json(step, "sharing_plan")
    finally:
        ckpt.close()
    plan = SharingPlan.shared(params, langs) if plan_json is None else SharingPlan.from_json(plan_json, params)
    if tuple(plan.langs) != langs:
        raise ValueError(f"the checkpoint's sharing plan is over {plan.langs}, the config's data.tgt_langs "
                         f"are {langs}")
    expected = plan.abstract(abstract_params(model_cfg))
    if jax.tree.structure(expected) != jax.tree.structure(params) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params))):
        raise ValueError(f"{workdir} step {step}: the saved parameters do not match the config's model "
                         f"({c.model.s2t.arch}) under the saved sharing plan")
    return Run(c, step, vocab, S2TTransformer(model_cfg), params, plan)
