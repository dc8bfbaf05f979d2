"""Exporting a training run (`mlst average`): the average of its last checkpoints as a `Translator` directory, one
per target language where the run has language-specific parameters."""
from __future__ import annotations

from pathlib import Path

import ml_collections

from mlst_jax.train.run import Run

__all__ = ["average_and_export"]


def average_and_export(config: ml_collections.ConfigDict | None, workdir: str | Path, last: int,
                       out: str | Path) -> dict:
    """Averages the last `last` checkpoints of `workdir` and writes them as a `Translator` directory `out`
    (one `out/<stream>` per stream when the run has language-specific parameters, each recording the target
    language it serves). `config`: the config to read the run with (None: the run's own)."""
    if last < 1:
        raise ValueError(f"--last {last} must be >= 1")
    with Run(workdir, config) as run:
        if run.config.data.cmvn == "global":
            raise ValueError("data.cmvn='global': exported models apply utterance CMVN or none")
        task, vocab, model_cfg = run.task, run.vocab, run.model_config
        steps = run.averaged_steps(last)
        params = run.averaged_params(last)
        plan = run.plan()
    out = Path(out)
    if plan.is_shared:
        task.translator(model_cfg, params, vocab).save(out)
        return {"steps": steps, "out": [str(out)]}
    tgt = {s.name: s.tgt for s in task.streams()}
    for lang in plan.langs:
        translator = task.translator(model_cfg, plan.view(params, lang), vocab)
        translator.langs = (tgt[lang],)
        translator.save(out / lang)
    return {"steps": steps, "out": [str(out / lang) for lang in plan.langs]}
