"""Exporting a training run (`mlst average`): the average of its last checkpoints as a `Translator` directory, one
per target language where the run has language-specific parameters."""
from __future__ import annotations

from pathlib import Path

import ml_collections

from mlst_jax.train import trainer
from mlst_jax.train.tasks import get_task

__all__ = ["average_and_export", "check_run_dir"]


def check_run_dir(workdir: str | Path) -> None:
    """ValueError unless `workdir` is a training run directory (one with checkpoints/)."""
    if not Path(workdir).is_dir():
        raise ValueError(f"{workdir} does not exist")
    if not (Path(workdir) / "checkpoints").is_dir():
        raise ValueError(f"{workdir} has no checkpoints/: not a training run directory")


def average_and_export(config: ml_collections.ConfigDict, workdir: str | Path, last: int,
                       out: str | Path) -> dict:
    """Averages the last `last` checkpoints of `workdir` and writes them as a `Translator` directory `out`
    (one `out/<stream>` per stream when the run has language-specific parameters, each recording the target
    language it serves)."""
    c = ml_collections.ConfigDict(config.to_dict())
    task = get_task(c)
    if c.data.cmvn == "global":
        raise ValueError("data.cmvn='global': exported models apply utterance CMVN or none")
    if last < 1:
        raise ValueError(f"--last {last} must be >= 1")
    check_run_dir(workdir)
    prefix = Path(workdir) / "vocab" / "spm.model"
    if task.family == "s2t" and not c.data.vocab and not prefix.is_file():
        raise ValueError(f"{prefix} does not exist and the config names no data.vocab")
    vocab = task.load_vocab(workdir)
    model_cfg = task.model_config(vocab)
    params = trainer.average_checkpoints(workdir, last)
    steps = trainer.averaged_steps(workdir, last)
    plan = trainer.run_plan(workdir, task.stream_names, params)
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
