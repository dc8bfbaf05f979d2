"""The `mlst train`, `evaluate`, `average` and `compile` subcommands.

Configs are named as for `python -m mlst_jax.main`: `--config FILE[:ARG]` (`get_config(ARG)`) followed by any
number of `--config.FIELD=VALUE` overrides (ml_collections `config_flags`), e.g.

    mlst train --config configs/synth.py:tiny --workdir /tmp/run --config.train.max_updates=100
    mlst evaluate --config configs/synth.py:tiny --workdir /tmp/run --split tst-COMMON
    mlst average --workdir /tmp/run --last 10 --out /tmp/run/export   # a directory `mlst translate` loads
    mlst compile --config configs/mustc.py:multilingual --mesh data=2,fsdp=2,tensor=2 \\
        --config.data.max_frames_per_batch=160000   # 8 devices; 40,000 frames for each of the 4 batch devices
"""
from __future__ import annotations

import argparse
import json
import sys

from mlst_jax.jobs.export import average_and_export
from mlst_jax.train import distributed, trainer
from mlst_jax.train.aot import compile_train_step
from mlst_jax.train.config import load_config

__all__ = ["add_train_commands"]


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
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id, auto=args.distributed)


def _print(result) -> None:
    print(json.dumps(result, default=float), flush=True)


def _train(args) -> int:
    _initialize(args)
    config = load_config(args.config, args.config_overrides)
    if args.init:
        config.init.run = args.init
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
    _print(trainer.evaluate(config, args.workdir, args.split))
    return 0


def _average(args) -> int:
    if args.config_overrides and not args.config:
        raise ValueError(f"{' '.join(args.config_overrides)}: config overrides need --config")
    config = load_config(args.config, args.config_overrides) if args.config else None
    _print(average_and_export(config, args.workdir, args.last, args.out))
    return 0


def _compile(args) -> int:
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
                                  "plan (sets init.run)")
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
