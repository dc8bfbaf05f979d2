"""Training entry point.

    python -m mlst_jax.main --config configs/synth.py:tiny --workdir DIR [--config.train.max_updates=100 ...]

The config and its `--config.FIELD=VALUE` overrides are read and checked as by `mlst train` (`load_config`): a
bad file or field is one line naming it, and exit status 2. Multi-process runs call `jax.distributed.initialize()`
when `--coordinator_address` (or `JAX_COORDINATOR_ADDRESS`) is given, or with `--distributed` from the cluster
environment (SLURM, Cloud TPU, ...); see `mlst_jax/train/distributed.py`. A diverged run (NaN/inf loss) exits with
status 1 and names the last good checkpoint.
`--mode=evaluate` scores the averaged last checkpoints on `--split` (default: `data.test_split`).
"""
from __future__ import annotations

import json
import logging
import sys

from absl import app, flags

from mlst_jax.train import distributed, trainer
from mlst_jax.train.config import load_config

_CONFIG = flags.DEFINE_string("config", None, "experiment config FILE[:ARG]; then --config.FIELD=VALUE overrides",
                              required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, metrics and the vocabulary go here", required=True)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "train (and evaluate on dev) or evaluate only")
_SPLIT = flags.DEFINE_string("split", None, "corpus split for --mode=evaluate")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator_address)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator_address)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() with auto-detection")


def _usage_error(e: Exception) -> None:
    print(f"python -m mlst_jax.main: error: {e}", file=sys.stderr)
    sys.exit(2)


def _parse(argv: list[str]) -> tuple[list[str], list[str]]:
    """absl's flags from `argv`, and the `--config.FIELD=VALUE` (or `--config.FIELD VALUE`) overrides apart."""
    rest, overrides, args = argv[:1], [], iter(argv[1:])
    for arg in args:
        if arg.startswith("--config."):
            overrides.append(arg)
            if "=" not in arg:
                overrides.append(next(args, ""))
        else:
            rest.append(arg)
    try:
        return flags.FLAGS(rest), overrides
    except flags.Error as e:
        _usage_error(e)


def main(parsed: tuple[list[str], list[str]]) -> None:
    """Runs training or evaluation for the parsed flags."""
    argv, overrides = parsed
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = load_config(_CONFIG.value, overrides)
    except ValueError as e:
        _usage_error(e)
    logging.getLogger().setLevel(logging.INFO)
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_DISTRIBUTED.value)
    if _MODE.value == "train":
        try:
            result = trainer.train_and_evaluate(config, _WORKDIR.value)
        except FloatingPointError as e:  # diverged: the message names the last good checkpoint
            sys.exit(f"error: {e}")
    else:
        result = trainer.evaluate(config, _WORKDIR.value, _SPLIT.value)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
