"""Model families behind one interface (`base.Task`), chosen by `model.family`."""
from __future__ import annotations

import ml_collections

from mlst_jax.train.tasks.base import Stream, Task
from mlst_jax.train.tasks.ctc import CTCTask
from mlst_jax.train.tasks.mbart import MBartTask
from mlst_jax.train.tasks.s2t import S2TTask
from mlst_jax.train.tasks.xmef import XMEFTask

__all__ = ["Stream", "Task", "get_task", "TASKS"]

TASKS: dict[str, type[Task]] = {"s2t": S2TTask, "xmef": XMEFTask, "wav2vec2_ctc": CTCTask, "mbart": MBartTask}


def get_task(c: ml_collections.ConfigDict) -> Task:
    """The task of `model.family`."""
    if c.model.family not in TASKS:
        raise ValueError(f"model.family={c.model.family!r} is not one of {', '.join(TASKS)}")
    return TASKS[c.model.family](c)
