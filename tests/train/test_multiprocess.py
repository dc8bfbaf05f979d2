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


def run_both(args_for, tmp_path) -> tuple[dict, list[dict]]:
    """`args_for(budget_scale)` run as 2 processes x 2 CPU devices (per-process budgets) and as 1 process x 4
    devices (budgets doubled): (the single run's result, each process's result)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_FLAGS", "JAX_"))}
    env["JAX_PLATFORMS"] = "cpu"
    logs = tmp_path / "logs"
    multi = subprocess.Popen(
        ["bash", str(ROOT / "launch" / "local_multiprocess.sh"), "--", *args_for(1), f"--workdir={tmp_path / 'multi'}"],
        cwd=ROOT, env={**env, "NUM_PROCESSES": "2", "DEVICES_PER_PROCESS": "2", "PORT": str(free_port()),
                       "PYTHON": sys.executable, "LOG_DIR": str(logs)})
    single = start_main(args_for(2), tmp_path / "single", {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    expected = finish(single, tmp_path / "single")
    assert multi.wait(600) == 0, "\n".join((logs / f"process_{i}.err").read_text()[-3000:] for i in (0, 1))
    got = [last_json((logs / f"process_{i}.out").read_text()) for i in (0, 1)]
    a, b = params_at(tmp_path / "multi", STEPS), params_at(tmp_path / "single", STEPS)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
    return expected, got


def test_two_processes_train_like_one(tiny_data, tmp_path):
    # The frame budget is per process: 2 processes x 3072 frames = one process with 6144 (rows [2 langs, 8]).
    # Eval batches of 8 rows per process = 16 rows in one process.
    expected, got = run_both(lambda k: config_args(tiny_data, {**FIELDS, "data.max_frames_per_batch": 3072 * k,
                                                                "eval.batch_size": 8 * k}), tmp_path)
    for i, result in enumerate(got):
        assert result["step"] == STEPS
        for key in ("train/loss", "train/nll", "train/ntokens", "eval/nll_de", "eval/nll_es"):
            assert result[key] == pytest.approx(expected[key], abs=1e-5), (i, key)
        assert result["eval/bleu_avg"] == got[0]["eval/bleu_avg"]


def test_two_processes_train_xmef_like_one(xmef_data, tmp_path):
    """The same for XMEF (LNA-Minimalist from the tiny HF checkpoints; waveform batches of mixed directions); the
    evaluation gather is the S2T test's (the same code), so this run skips evaluation."""
    from xmef_runs import xmef_args

    fields = {**FIELDS, "train.eval_every": 0}
    expected, got = run_both(lambda k: xmef_args(xmef_data, {**fields, "data.max_frames_per_batch": 128000 * k}),
                             tmp_path)
    for i, result in enumerate(got):
        assert result["step"] == STEPS
        for key in ("train/loss", "train/nll", "train/ntokens", "train/nsentences"):
            assert result[key] == pytest.approx(expected[key], abs=1e-5), (i, key)
