"""Training entry point.

    python -m mlst_jax.main --config configs/synth_tiny.py --workdir DIR [--config.train.max_updates=100 ...]

Multi-process runs call `jax.distributed.initialize()` when `--coordinator_address` is given or the
cluster environment provides one (`JAX_COORDINATOR_ADDRESS`, SLURM, Cloud TPU, ...; `--distributed`).
`--mode=evaluate` scores the averaged last checkpoints on `--split` (default: `data.test_split`).
"""
from __future__ import annotations

import json
import logging
import os

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


def _maybe_initialize_distributed() -> None:
    import jax

    if _COORDINATOR.value:
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif _DISTRIBUTED.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()


def main(argv) -> None:
    """Runs training or evaluation for the parsed flags."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    _maybe_initialize_distributed()
    from mlst_jax.train import trainer

    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required")
    if _MODE.value == "train":
        result = trainer.train_and_evaluate(config, _WORKDIR.value)
    else:
        result = trainer.evaluate(config, _WORKDIR.value, _SPLIT.value)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    app.run(main)
