"""The `mlst train`, `evaluate`, `average` and `compile` subcommands.

Configs are named as for `python -m mlst_jax.main`: `--config FILE[:ARG]` (`get_config(ARG)`) followed by any
number of `--config.FIELD=VALUE` overrides (ml_collections `config_flags`), e.g.

    mlst train --config configs/synth_tiny.py --workdir /tmp/run --config.train.max_updates=100
    mlst evaluate --config configs/synth_tiny.py --workdir /tmp/run --split tst-COMMON
    mlst average --workdir /tmp/run --last 10 --out /tmp/run/export   # a directory `mlst translate` loads
    mlst compile --config configs/mustc_multilingual_m.py --mesh data=2,fsdp=2,tensor=2 \\
        --config.data.max_frames_per_batch=160000   # 8 devices; 40,000 frames for each of the 4 batch devices
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

import ml_collections

__all__ = ["add_train_commands", "load_config", "average_and_export", "workdir_config"]


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config `FILE[:ARG]` with `--config.FIELD=VALUE` overrides, parsed exactly as `mlst_jax.main` does."""
    from absl import flags
    from ml_collections import config_flags

    path = spec.split(":", 1)[0]
    if not Path(path).is_file():
        raise ValueError(f"config file {path!r} does not exist")
    stray = [a for a in overrides if a.startswith("-") and not a.startswith("--config.")]
    if stray:
        raise ValueError(f"unrecognized arguments {stray}; config fields are overridden as --config.FIELD=VALUE")
    argv = ["mlst", f"--config={spec}", *overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "experiment config file", flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    try:
        fv(argv)
        config = fv["config"].value
    except (flags.Error, AttributeError, KeyError, TypeError) as e:  # bad overrides, get_config errors
        raise ValueError(f"--config {spec}: {_unknown_field(spec, overrides) or _last_line(str(e))}") from None
    if config is None:
        raise ValueError(f"{path}: get_config() returned None")
    return config


def _last_line(message: str) -> str:
    """The exception line of a message that embeds a traceback (config_flags wraps get_config errors so)."""
    if "Traceback (most recent call last)" not in message:
        return message
    last = [l for l in message.splitlines() if l.strip()][-1]
    return last.split(": ", 1)[1] if re.match(r"^\w+(Error|Exception): ", last) else last


def _unknown_field(spec: str, overrides: Sequence[str]) -> str | None:
    """"no config field X" for the first override naming a field the config does not have."""
    if not overrides:
        return None
    config = load_config(spec)
    for arg in overrides:
        if not arg.startswith("--config."):
            continue
        node, name = config, arg[len("--config."):].split("=", 1)[0]
        for part in name.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                return f"no config field {name!r} ({arg})"
            node = node[part]
    return None


def _add_config(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="experiment config FILE[:ARG]; then --config.FIELD=VALUE "
                                                        "overrides (any number)")
    p.set_defaults(accepts_config_overrides=True)


def _add_distributed(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-process runs (see docs/training.md)")
    g.add_argument("--coordinator-address", help="host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, help="number of processes (default: $JAX_NUM_PROCESSES or the "
                                                     "cluster's)")
    g.add_argument("--process-id", type=int, help="this process's index (default: $JAX_PROCESS_ID or the cluster's)")
    g.add_argument("--distributed", action="store_true", help="initialize jax.distributed from the cluster "
                                                              "environment (SLURM, Cloud TPU, Open MPI, ...)")


def _initialize(args) -> None:
    from mlst_jax.train import distributed

    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id, auto=args.distributed)


def _print(result) -> None:
    print(json.dumps(result, default=float), flush=True)


def _train(args) -> int:
    _initialize(args)
    config = load_config(args.config, args.config_overrides)
    if args.init:
        config.sharing.init = args.init
    from mlst_jax.train import trainer

    try:
        result = trainer.train_and_evaluate(config, args.workdir)
    except FloatingPointError as e:
        print(f"mlst train: error: {e}", file=sys.stderr)
        return 1
    _print(result)
    return 0


def _evaluate(args) -> int:
    _initialize(args)
    config = load_config(args.config, args.config_overrides)
    from mlst_jax.train import trainer

    _print(trainer.evaluate(config, args.workdir, args.split))
    return 0


def workdir_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a training run saved (`<workdir>/config.json`)."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: pass --config (the run's experiment config)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def _check_run_dir(workdir: str | Path) -> None:
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
    from mlst_jax.train import trainer
    from mlst_jax.train.tasks import get_task

    c = ml_collections.ConfigDict(config.to_dict())
    task = get_task(c)
    if c.data.cmvn == "global":
        raise ValueError("data.cmvn='global': exported models apply utterance CMVN or none")
    if last < 1:
        raise ValueError(f"--last {last} must be >= 1")
    _check_run_dir(workdir)
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


def _average(args) -> int:
    if args.config_overrides and not args.config:
        raise ValueError(f"{' '.join(args.config_overrides)}: config overrides need --config")
    _check_run_dir(args.workdir)
    config = load_config(args.config, args.config_overrides) if args.config else workdir_config(args.workdir)
    _print(average_and_export(config, args.workdir, args.last, args.out))
    return 0


def _compile(args) -> int:
    from mlst_jax.train.aot import compile_train_step

    config = load_config(args.config, args.config_overrides)
    try:
        frames = [int(t) for t in args.frames.split(",") if t.strip()] if args.frames else None
    except ValueError:
        raise ValueError(f"--frames {args.frames!r}: expected comma-separated frame buckets, e.g. 128,3072") from None
    _print(compile_train_step(config, args.mesh, frames, args.tokens))
    return 0


def add_train_commands(subparsers) -> None:
    """Registers `train`, `evaluate`, `average` and `compile` on an argparse subparsers object. Their `func`
    reads `args.config_overrides` (the `--config.FIELD=VALUE` arguments `mlst_jax.cli` leaves over)."""
    p = subparsers.add_parser("train", help="train (resuming from the workdir's latest checkpoint) and evaluate")
    _add_config(p)
    p.add_argument("--workdir", required=True, help="checkpoints, metrics, vocabulary and config.json go here")
    p.add_argument("--init", help="start from this run's latest checkpoint, re-laid out for the config's sharing "
                                  "plan (sets sharing.init)")
    _add_distributed(p)
    p.set_defaults(func=_train)

    p = subparsers.add_parser("evaluate", help="BLEU per language of the averaged last checkpoints (JSON)")
    _add_config(p)
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", help="corpus split (default: the config's data.test_split)")
    _add_distributed(p)
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("average", help="average the last N checkpoints into a model directory that "
                                              "`mlst translate --checkpoint` and Translator.from_pretrained load")
    _add_config(p, required=False)
    p.add_argument("--workdir", required=True)
    p.add_argument("--last", type=int, default=10, help="number of checkpoints (fewer if fewer are kept)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_average)

    p = subparsers.add_parser("compile", help="compile the train step for a mesh without data or parameters; "
                                              "prints per-device memory and FLOPs (JSON)")
    _add_config(p)
    p.add_argument("--mesh", help="e.g. data=2,fsdp=2,tensor=2 (default: the config's mesh); the sizes must "
                                  "multiply to this machine's device count")
    p.add_argument("--frames", help="comma-separated frame buckets to compile (default: the smallest and largest)")
    p.add_argument("--tokens", type=int, help="target length, rounded up to a token bucket (default: the longest "
                                              "token bucket)")
    p.set_defaults(func=_compile)
