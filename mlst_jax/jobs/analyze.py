"""The similarity analysis of a trained run (`mlst analyze`): per-task gradients on its multi-way aligned set, the
quadruplets and the layer-wise and language-pair analyses (seed 000 Fig. 2 and 3)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlst_jax.sharing.analysis import write_analysis
from mlst_jax.sharing.gradients import similarities, task_gradients, write_quadruplets_csv
from mlst_jax.train.inputs import multiway_batches
from mlst_jax.train.run import Run

__all__ = ["analyze_run"]


def analyze_run(workdir: str | os.PathLike, split: str, out_dir: str | os.PathLike, *, step: int | None = None,
                max_utterances: int | None = None, batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """Per-task gradients of run `workdir` on the multi-way aligned `split` of its corpus; writes
    quadruplets.csv and the two analyses (`write_analysis`) into `out_dir`. Returns `write_analysis`'s dict
    plus "step", "utterances", "nll" ({lang: mean NLL}) and "similarity" ({unit: [n, n]})."""
    with Run(workdir) as run:
        step = run.latest_step if step is None else step
        run.check_model(step)
        params, plan = run.params(step), run.plan(step)
        batches = multiway_batches(run.config, run.task, plan.langs, split, run.vocab, batch_size,
                                   max_utterances=max_utterances)
        grads = task_gradients(run.model, params, plan, batches, progress=progress)
    matrices, quads = similarities(grads, plan)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_quadruplets_csv(out / "quadruplets.csv", quads)
    result = write_analysis(out, quads, plan.langs)
    result["files"] = {"quadruplets.csv": out / "quadruplets.csv", **result["files"]}
    result.update(step=step, utterances=grads.utterances, similarity=matrices,
                  nll=dict(zip(plan.langs, grads.nll.tolist())))
    return result
