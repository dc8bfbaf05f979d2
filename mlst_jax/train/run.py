"""A training run directory read back: its config, vocabulary, model, checkpoint steps, sharing plans, parameters and
averaged parameters. The one reader of a run: evaluation, `mlst average`, `mlst differentiate`, `mlst analyze`, a run
continued from another (`init.run`) and the demo all go through `Run`."""
from __future__ import annotations

import json
import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from mlst_jax.sharing.plan import SharingPlan
from mlst_jax.train.checkpoint import Checkpointer, Restored
from mlst_jax.train.tasks import Task, get_task

__all__ = ["Run", "saved_plan"]

logger = logging.getLogger(__name__)


def saved_plan(ckpt: Checkpointer, step: int, like_params: Any, langs) -> SharingPlan:
    """The sharing plan saved with `step` of `ckpt` (none saved: fully shared) over parameters structured like
    `like_params`, checked to be over the streams `langs`."""
    d = ckpt.restore_json(step, "sharing_plan")
    plan = SharingPlan.shared(like_params, langs) if d is None else SharingPlan.from_json(d, like_params)
    if tuple(plan.langs) != tuple(langs):
        raise ValueError(f"checkpoint {ckpt.directory / str(step)}: its sharing plan is over {plan.langs}, the "
                         f"config's streams are {tuple(langs)}")
    return plan


class Run:
    """The run in `workdir` (a directory holding `checkpoints/`); use it as a context manager, or `close()` it.

    `config`: the config to read the run with (default: the run's `config.json`, else the one saved with its
    latest checkpoint). Parameters come back as host numpy arrays in their sharing plan's layout.
    """

    def __init__(self, workdir: str | Path, config: ml_collections.ConfigDict | None = None):
        self.workdir = Path(workdir)
        if not self.workdir.is_dir():
            raise ValueError(f"{workdir} does not exist")
        directory = self.workdir / "checkpoints"
        if not directory.is_dir():
            raise ValueError(f"{workdir} has no checkpoints/: not a training run directory")
        self.ckpt = Checkpointer(directory, keep=None, async_save=False)
        self.steps: list[int] = self.ckpt.all_steps()
        if not self.steps:
            self.ckpt.close()
            raise ValueError(f"{directory}: no checkpoints")
        self._config = None if config is None else ml_collections.ConfigDict(config.to_dict())
        self._averaged: dict[int, Any] = {}

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.ckpt.close()

    # -- what the run is ------------------------------------------------------------------------------------

    @property
    def latest_step(self) -> int:
        return self.steps[-1]

    @cached_property
    def config(self) -> ml_collections.ConfigDict:
        if self._config is not None:
            return self._config
        path = self.workdir / "config.json"
        d = json.loads(path.read_text()) if path.is_file() else self.ckpt.restore_json(self.latest_step, "config")
        if not d:
            raise ValueError(f"{self.workdir}: no config.json and no config saved with step {self.latest_step}")
        return ml_collections.ConfigDict(d)

    @cached_property
    def task(self) -> Task:
        return get_task(self.config)

    @cached_property
    def vocab(self):
        c = self.config
        spm = self.workdir / "vocab" / "spm.model"
        if self.task.family == "s2t" and not c.data.vocab and not spm.is_file():
            raise ValueError(f"{self.workdir}: the config names no vocabulary (data.vocab) and {spm} is missing")
        return self.task.load_vocab(self.workdir)

    @cached_property
    def model_config(self):
        return self.task.model_config(self.vocab)

    @cached_property
    def model(self):
        return self.task.model(self.model_config)

    # -- one checkpoint -------------------------------------------------------------------------------------

    def _step(self, step: int | None) -> int:
        if step is None:
            return self.latest_step
        if step not in self.steps:
            raise ValueError(f"{self.ckpt.directory}: no checkpoint for step {step}; saved steps: {self.steps}")
        return step

    def plan(self, step: int | None = None, langs=None) -> SharingPlan:
        """The sharing plan saved with `step` (default: the latest; none saved: fully shared) over the streams
        `langs` (default: the config's)."""
        step = self._step(step)
        langs = self.task.stream_names if langs is None else langs
        return saved_plan(self.ckpt, step, self.ckpt.params_shapes(step), langs)

    def params(self, step: int | None = None) -> Any:
        """The parameters saved with `step` (default: the latest)."""
        return self.ckpt.restore_params(self._step(step))

    def check_model(self, step: int | None = None) -> None:
        """ValueError unless the parameters of `step` have the shapes of the config's model under its plan."""
        step = self._step(step)
        expected = self.plan(step).abstract(self.task.abstract_params(self.model_config))
        saved = self.ckpt.params_shapes(step)
        if jax.tree.structure(expected) != jax.tree.structure(saved) or any(
                tuple(a.shape) != tuple(b.shape) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(saved))):
            raise ValueError(f"{self.workdir} step {step}: the saved parameters do not match the config's model "
                             f"under the saved sharing plan")

    def saved_config(self, step: int | None = None) -> dict | None:
        """The config saved with checkpoint `step` (None for checkpoints saved without one)."""
        try:
            return self.ckpt.restore_json(self._step(step), "config")
        except ValueError:
            return None

    def restore(self, abstract_state, step: int | None = None) -> Restored:
        """The whole train state of `step` (parameters, optimizer, rng, data position) into `abstract_state`."""
        return self.ckpt.restore(self._step(step), abstract_state)

    # -- the last checkpoints averaged ----------------------------------------------------------------------

    def averaged_steps(self, last_n: int) -> list[int]:
        """Of the last `last_n` steps, those saved under the latest step's sharing plan (a continued run's first
        checkpoints may hold another layout)."""
        steps = self.steps[-max(1, last_n):]
        plan = self.ckpt.restore_json(steps[-1], "sharing_plan")
        kept = [s for s in steps if self.ckpt.restore_json(s, "sharing_plan") == plan]
        if len(kept) < len(steps):
            logger.info("not averaging steps %s: saved under a different sharing plan", sorted(set(steps) - set(kept)))
        return kept

    def averaged_params(self, last_n: int) -> Any:
        """The element-wise mean (float32) of the parameters of `averaged_steps(last_n)` (computed once per run)."""
        if last_n in self._averaged:
            return self._averaged[last_n]
        kept = self.averaged_steps(last_n)
        total = None
        for s in kept:
            p = jax.tree.map(lambda x: np.asarray(x, np.float64), self.params(s))
            total = p if total is None else jax.tree.map(np.add, total, p)
        logger.info("averaged steps %s", kept)
        self._averaged[last_n] = jax.tree.map(lambda x: (x / len(kept)).astype(np.float32), total)
        return self._averaged[last_n]
