"""Crashes, preemption and divergence: a killed run resumes bit for bit, SIGTERM saves the current step, a NaN
stops training with the last good checkpoint intact."""
import random
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from train_runs import (ROOT, RUN_FIELDS, config_args, finish, kill_and_resume, params_at, run_until, saved_steps,
                        start_main)

pytestmark = pytest.mark.slow

MAX, EVERY = RUN_FIELDS["train.max_updates"], RUN_FIELDS["train.checkpoint_every"]


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_sigkill_then_resume_is_bitwise_exact(reference_run, tiny_data, subprocess_env, tmp_path):
    _, ref_result, ref_params = reference_run
    result, killed_at, _ = kill_and_resume(config_args(tiny_data, RUN_FIELDS), tmp_path / "run", subprocess_env,
                                           EVERY, MAX)
    assert result["step"] == MAX and result["train/loss"] == ref_result["train/loss"], f"killed after step {killed_at}"
    assert_same_params(params_at(tmp_path / "run", MAX), ref_params)


def test_sigterm_saves_the_current_step(reference_run, tiny_data, subprocess_env, tmp_path):
    _, _, ref_params = reference_run
    term_at = random.Random().randint(EVERY + 1, MAX - 2)
    workdir = tmp_path / "run"
    args = config_args(tiny_data, RUN_FIELDS)
    proc = start_main(args, workdir, subprocess_env)
    run_until(proc, workdir, term_at)
    proc.send_signal(signal.SIGTERM)
    result = finish(proc, workdir)  # exits cleanly, reporting the step it stopped at
    stopped = result["step"]
    assert result["preempted"] is True
    assert term_at <= stopped < MAX and max(saved_steps(workdir)) == stopped
    assert f"preemption requested: saving step {stopped}" in Path(f"{workdir}.err").read_text()

    result = finish(start_main(args, workdir, subprocess_env), workdir)
    assert result["step"] == MAX and result["preempted"] is False
    assert_same_params(params_at(workdir, MAX), ref_params)


# `mlst train` whose train step returns NaN parameters from update 6 on.
POISONED_TRAIN = """
import sys
import jax
import jax.numpy as jnp
from mlst_jax import cli
from mlst_jax.train import trainer

real = trainer.make_train_step

def make(*args, **kwargs):
    step = real(*args, **kwargs)

    def poisoned(state, batch):
        state, metrics = step(state, batch)
        if int(state.step) == 6:
            state = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
        return state, metrics
    return poisoned

trainer.make_train_step = make
sys.exit(cli.main(["train", *sys.argv[1:]]))
"""


@pytest.mark.parametrize("log_every,message", [
    (2, "loss is nan at step 8; the last good checkpoint is step 4"),  # caught at the next logged loss
    (100, "parameters are not finite at step 8; the last good checkpoint is step 4"),  # caught before saving
])
def test_nan_stops_with_the_last_good_checkpoint(tiny_data, subprocess_env, tmp_path, log_every, message):
    from mlst_jax.train.checkpoint import Checkpointer

    workdir = tmp_path / "run"
    args = config_args(tiny_data, {**RUN_FIELDS, "train.log_every": log_every})
    proc = subprocess.run([sys.executable, "-c", POISONED_TRAIN, *args, f"--workdir={workdir}"], cwd=ROOT,
                          env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.rstrip().endswith(f"mlst train: error: {message}")
    ckpt = Checkpointer(workdir / "checkpoints")
    try:
        assert ckpt.all_steps() == [4]
        params = ckpt.restore_params(4)
    finally:
        ckpt.close()
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
