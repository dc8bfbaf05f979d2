"""Training entry point.

    python -m mlst_jax.main --config configs/synth_tiny.py --workdir DIR [--config.train.max_updates=100 ...]

Multi-process runs call `jax.distributed.initialize()` when `--coordinator_address` (or
`JAX_COORDINATOR_ADDRESS`) is given, or with `--distributed` from the cluster environment (SLURM, Cloud TPU,
...); see `mlst_jax/train/distributed.py`. A diverged run (NaN/inf loss) exits with status 1 and names the
last good checkpoint.
`--mode=evaluate` scores the averaged last checkpoints on `--split` (default: `data.test_split`).
"""
from __future__ import annotations

import json
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, metrics and the vocabulary go here", required=True)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "train (and evaluate on dev) or evaluate only")
_SPLIT = flags.DEFINE_string("split", None, "corpus split for --mode=evaluate")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator_address)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator_address)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() with auto-detection")


def main(argv) -> None:
    """Runs training or evaluation for the parsed flags."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    from mlst_jax.train import distributed

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_DISTRIBUTED.value)
    from mlst_jax.train import trainer

    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required")
    if _MODE.value == "train":
        try:
            result = trainer.train_and_evaluate(config, _WORKDIR.value)
        except FloatingPointError as e:  # diverged: the message names the last good checkpoint
            sys.exit(f"error: {e}")
    else:
        result = trainer.evaluate(config, _WORKDIR.value, _SPLIT.value)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    app.run(main)
