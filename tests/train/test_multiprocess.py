"""Two processes x 2 CPU devices (launch/local_multiprocess.sh, gloo collectives) train exactly like one process
with 4 devices: each process feeds its half of every global batch."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from train_runs import ROOT, config_args, finish, last_json, params_at, start_main

pytestmark = pytest.mark.slow

STEPS = 3
FIELDS = {"train.max_updates": STEPS, "train.log_every": 1, "train.checkpoint_every": STEPS,
          "train.eval_every": STEPS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(tiny_data, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_FLAGS", "JAX_"))}
    env["JAX_PLATFORMS"] = "cpu"
    # The frame budget is per process: 2 processes x 3072 frames = one process with 6144 (rows [2 langs, 8]).
    # Eval batches of 8 rows per process = 16 rows in one process.
    multi_args = config_args(tiny_data, {**FIELDS, "data.max_frames_per_batch": 3072, "eval.batch_size": 8})
    single_args = config_args(tiny_data, {**FIELDS, "data.max_frames_per_batch": 6144, "eval.batch_size": 16})
    logs = tmp_path / "logs"
    multi = subprocess.Popen(
        ["bash", str(ROOT / "launch" / "local_multiprocess.sh"), "--", *multi_args, f"--workdir={tmp_path / 'multi'}"],
        cwd=ROOT, env={**env, "NUM_PROCESSES": "2", "DEVICES_PER_PROCESS": "2", "PORT": str(free_port()),
                       "PYTHON": sys.executable, "LOG_DIR": str(logs)})
    single = start_main(single_args, tmp_path / "single",
                        {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    expected = finish(single, tmp_path / "single")
    assert multi.wait(600) == 0, "\n".join((logs / f"process_{i}.err").read_text()[-3000:] for i in (0, 1))

    for i in (0, 1):
        got = last_json((logs / f"process_{i}.out").read_text())
        assert got["step"] == STEPS
        for key in ("train/loss", "train/nll", "train/ntokens", "eval/nll_de", "eval/nll_es"):
            assert got[key] == pytest.approx(expected[key], abs=1e-5), (i, key)
        assert got["eval/bleu_avg"] == last_json((logs / "process_0.out").read_text())["eval/bleu_avg"]
    a, b = params_at(tmp_path / "multi", STEPS), params_at(tmp_path / "single", STEPS)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
