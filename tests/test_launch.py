"""Job scripts under launch/: their dry runs print the exact commands, and shellcheck finds nothing."""
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
MAIN_ARGS = ["--config", "configs/synth.py:tiny", "--workdir", "/runs/a b", "--config.data.tgt_langs=('de','es')"]
# XMEF on a pod (the Europarl-ST zero-shot run of docs/reproducing.md): pretrained parts, tuples, comma lists
XMEF_ARGS = ["--config", "configs/xmef_covost_large.py", "--workdir", "/mnt/shared/runs/xmef europarl",
             "--config.init.encoder=/mnt/shared/ckpt/wav2vec2-large-lv60",
             "--config.init.decoder=/mnt/shared/ckpt/mbart-large-50", "--config.data.dataset=europarl_st",
             "--config.data.manual_dir=/mnt/shared/europarl_st/v1.1", "--config.data.data_dir=/mnt/shared/tfds",
             "--config.data.src_langs=('de','es','fr','it','pt')", "--config.data.tgt_langs=('de','es','fr','it','pt')",
             "--config.data.directions=english-centric", "--config.data.eval_directions=m2m",
             "--config.data.lang_codes=ca=es_XX,cy=fr_XX", "--config.finetune.trainable=lna-d",
             "--config.data.max_frames_per_batch=7680000", "--config.mesh.fsdp=8"]


def dry_run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(["bash", str(LAUNCH / script), *args], env={**clean, "DRY_RUN": "1", **env},
                          capture_output=True, text=True, timeout=60)


def commands(proc: subprocess.CompletedProcess) -> list[list[str]]:
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def test_local_multiprocess_dry_run():
    cmds = commands(dry_run("local_multiprocess.sh", "--", *MAIN_ARGS, NUM_PROCESSES="3", DEVICES_PER_PROCESS="4",
                            PORT="23456", PYTHON="/opt/py"))
    assert len(cmds) == 3
    for i, cmd in enumerate(cmds):
        env = dict(a.split("=", 1) for a in cmd[1:4])
        assert cmd[0] == "env" and env["XLA_FLAGS"].endswith("--xla_force_host_platform_device_count=4")
        assert env["JAX_PLATFORMS"] == "cpu" and env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] == "gloo"
        assert cmd[4:] == ["/opt/py", "-m", "mlst_jax.main", "--coordinator_address=127.0.0.1:23456",
                           "--num_processes=3", f"--process_id={i}", *MAIN_ARGS]


def test_tpu_pod_dry_run():
    cmds = commands(dry_run("tpu_pod.sh", "--dry-run", "--", *MAIN_ARGS, TPU_NAME="pod", ZONE="z1",
                            ACCELERATOR_TYPE="v5p-64", PROJECT="proj"))
    create, scp, setup, train = (c for c in cmds if c[0] == "gcloud")
    where = ["--zone=z1", "--project=proj"]
    assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod", *where, "--accelerator-type=v5p-64",
                      "--version=tpu-ubuntu2204-base"]
    assert scp[4] == "scp" and "--worker=all" in scp
    assert setup[4:6] == ["ssh", "pod"] and "--worker=all" in setup and "pip install" in setup[-1]
    assert train[4:6] == ["ssh", "pod"] and train[6:9] == [*where, "--worker=all"]
    remote = train[9].removeprefix("--command=")
    assert shlex.split(remote) == ["cd", "~/mlst_jax", "&&", "python3", "-m", "mlst_jax.main", "--distributed",
                                   *MAIN_ARGS]

    reuse = commands(dry_run("tpu_pod.sh", "--", *MAIN_ARGS, CREATE="0", SETUP="0"))
    assert len(reuse) == 1 and reuse[0][4] == "ssh"


def test_tpu_pod_dry_run_xmef():
    """An XMEF command line reaches every worker's `mlst_jax.main` word for word through the remote shell, and its
    overrides name fields of the config."""
    from mlst_jax.train.config import load_config

    cmds = commands(dry_run("tpu_pod.sh", "--", *XMEF_ARGS, TPU_NAME="pod", ZONE="z1", PROJECT="proj", CREATE="0",
                            SETUP="0"))
    assert len(cmds) == 1 and cmds[0][:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=z1",
                                              "--project=proj", "--worker=all"]
    remote = cmds[0][9].removeprefix("--command=")
    assert shlex.split(remote) == ["cd", "~/mlst_jax", "&&", "python3", "-m", "mlst_jax.main", "--distributed",
                                   *XMEF_ARGS]
    c = load_config(str(ROOT / XMEF_ARGS[1]), XMEF_ARGS[4:])
    assert (c.model.family, c.init.decoder, c.data.src_langs, c.data.lang_codes, c.mesh.fsdp) == \
        ("xmef", "/mnt/shared/ckpt/mbart-large-50", ("de", "es", "fr", "it", "pt"), "ca=es_XX,cy=fr_XX", 8)


def test_slurm_dry_run():
    proc = dry_run("slurm_gpu.sbatch", "--", *MAIN_ARGS, SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu[003-004],x9",
                   SLURM_NTASKS="16", PATH="/usr/bin:/bin")  # no scontrol: the script parses the node list
    env, cmd = commands(proc)
    assert env == ["JAX_COORDINATOR_ADDRESS=gpu003:24242", "JAX_NUM_PROCESSES=16"]
    assert cmd == ["srun", "--kill-on-bad-exit=1", "python", "-m", "mlst_jax.main", "--distributed", *MAIN_ARGS]

    outside = dry_run("slurm_gpu.sbatch", "--", *MAIN_ARGS)
    assert outside.returncode == 2 and "SLURM_JOB_ID is not set" in outside.stderr


@pytest.mark.parametrize("script", ["local_multiprocess.sh", "tpu_pod.sh", "slurm_gpu.sbatch"])
def test_usage_errors(script):
    proc = dry_run(script, SLURM_JOB_ID="1", SLURM_JOB_NODELIST="n1", SLURM_NTASKS="1")
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_shellcheck_is_clean():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install -r requirements-dev.txt)")
    scripts = sorted(str(p) for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
    proc = subprocess.run([shellcheck, "--shell=bash", *scripts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
