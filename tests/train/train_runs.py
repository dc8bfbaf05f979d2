"""Helpers for end-to-end training tests: config arguments for the tiny corpus, subprocess runs of
`python -m mlst_jax.main`, their results and checkpoints."""
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
SYNTH_TINY = f"{ROOT / 'configs' / 'synth.py'}:tiny"


class TinyData(NamedTuple):
    corpus: Path
    data_dir: Path
    vocab: Path


def config_args(data: TinyData, fields: dict) -> list[str]:
    """`--config` and `--config.FIELD=VALUE` arguments of `configs/synth.py:tiny` on `data` (2 languages, one 384-frame bucket)
    with `fields` on top."""
    values = {"data.manual_dir": data.corpus, "data.data_dir": data.data_dir, "data.vocab": data.vocab,
              "data.tgt_langs": ("de", "es"), "data.max_frames": 384, "data.frame_buckets": (384,),
              "data.token_buckets": (64,), "train.progress": False, "eval.beam": 2, "eval.max_len_b": 8, **fields}
    return [f"--config={SYNTH_TINY}"] + [f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
                                         for k, v in values.items()]


def start_main(args: list[str], workdir: Path, env: dict) -> subprocess.Popen:
    """`python -m mlst_jax.main ARGS --workdir WORKDIR`, stdout/stderr to `WORKDIR.out` / `WORKDIR.err`."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{workdir}.out", "ab") as out, open(f"{workdir}.err", "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "mlst_jax.main", *args, f"--workdir={workdir}"], cwd=ROOT,
                                env=env, stdout=out, stderr=err)


def finish(proc: subprocess.Popen, workdir: Path, timeout: float = 600) -> dict:
    """Waits for a run that must succeed; returns the JSON it printed last."""
    rc = proc.wait(timeout)
    assert rc == 0, f"exit status {rc}:\n{tail(f'{workdir}.err')}"
    return last_json(Path(f"{workdir}.out").read_text())


def last_json(text: str) -> dict:
    blocks = re.findall(r"^\{$.*?^\}$", text, re.S | re.M)
    assert blocks, f"no JSON result in:\n{text[-2000:]}"
    return json.loads(blocks[-1])


def tail(path, n: int = 4000) -> str:
    text = Path(path).read_text(errors="replace")
    return "\n".join(l for l in text[-4 * n:].splitlines() if not l.startswith(("I1", "W1")))[-n:]


def params_at(workdir: Path, step: int):
    from mlst_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(Path(workdir) / "checkpoints")
    try:
        return ckpt.restore_params(step)
    finally:
        ckpt.close()


def saved_steps(workdir: Path) -> list[int]:
    """Finished checkpoint steps (Orbax writes into a temporary directory and renames it when complete)."""
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


RUN_FIELDS = {"train.max_updates": 16, "train.log_every": 1, "train.checkpoint_every": 4, "train.eval_every": 0,
              "data.max_frames_per_batch": 3072}


def logged_step(workdir) -> int:
    """The last step in `workdir/metrics.jsonl` (0 when none is logged yet)."""
    path = Path(workdir) / "metrics.jsonl"
    for line in reversed(path.read_text().splitlines() if path.is_file() else []):
        try:
            return json.loads(line)["step"]
        except json.JSONDecodeError:  # a line being written
            continue
    return 0


def run_until(proc, workdir, step: int, timeout: float = 600) -> None:
    """Waits until the run logged `step` (it logs every step) and its first checkpoint is complete."""
    deadline = time.monotonic() + timeout
    while logged_step(workdir) < step or not saved_steps(workdir):
        assert proc.poll() is None, f"the run ended early ({proc.returncode}):\n{tail(f'{workdir}.err')}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def kill_and_resume(args: list[str], workdir: Path, env: dict, every: int, steps: int) -> tuple[dict, int, int]:
    """Starts a run of `steps` updates (checkpoints every `every`), kills it with SIGKILL at a random step after
    its first checkpoint, resumes it to the end: (the resumed run's result, the step it was killed after, the
    checkpoint it resumed from)."""
    kill_at = random.Random().randint(every + 1, steps - 2)
    proc = start_main(args, workdir, env)
    run_until(proc, workdir, kill_at)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    killed_at, saved = logged_step(workdir), max(saved_steps(workdir))
    assert every <= saved <= killed_at < steps, (kill_at, killed_at, saved)
    result = finish(start_main(args, workdir, env), workdir)
    assert f"resumed from step {saved}" in Path(f"{workdir}.err").read_text()
    return result, killed_at, saved
