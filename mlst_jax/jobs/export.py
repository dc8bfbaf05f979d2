"""Exporting a training run (`mlst average`): the average of its last checkpoints as a `Translator` directory, one
per target language where the run has language-specific parameters."""
from __future__ import annotations

from pathlib import Path

import ml_collections

from mlst_jax.train.run import Run

__all__ = ["average_and_export", "run_translator"]


def run_translator(run: Run, last: int, stream: str | None = None):
    """The `Translator` of the average of `run`'s last `last` checkpoints; for a run with language-specific
    parameters, the one of `stream` (recording the target language it serves)."""
    if last < 1:
        raise ValueError(f"--last {last} must be >= 1")
    if run.config.data.cmvn == "global":
        raise ValueError("data.cmvn='global': translators apply utterance CMVN or none")
    params, plan = run.averaged_params(last), run.plan()
    if plan.is_shared:
        return run.task.translator(run.model_config, params, run.vocab)
    if stream not in plan.langs:
        raise ValueError(f"{run.workdir} has language-specific parameters: name one of its streams "
                         f"({', '.join(plan.langs)}), not {stream!r}")
    translator = run.task.translator(run.model_config, plan.view(params, stream), run.vocab)
    translator.langs = ({s.name: s.tgt for s in run.task.streams()}[stream],)
    return translator


def average_and_export(config: ml_collections.ConfigDict | None, workdir: str | Path, last: int,
                       out: str | Path) -> dict:
    """Averages the last `last` checkpoints of `workdir` and writes them as a `Translator` directory `out`
    (one `out/<stream>` per stream when the run has language-specific parameters, each recording the target
    language it serves). `config`: the config to read the run with (None: the run's own)."""
    out = Path(out)
    with Run(workdir, config) as run:
        plan = run.plan()
        streams = [None] if plan.is_shared else list(plan.langs)
        for stream in streams:
            run_translator(run, last, stream).save(out if stream is None else out / stream)
        return {"steps": run.averaged_steps(last), "out": [str(out if s is None else out / s) for s in streams]}
