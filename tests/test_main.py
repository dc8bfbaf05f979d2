"""`python -m mlst_jax.main` reads its config as `mlst train` does: a bad file, field or flag is one line."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args, message", [
    (["--config=configs/synth.py:tiny", "--config.optim.lrr=1"],
     "--config configs/synth.py:tiny: no config field 'optim.lrr' (--config.optim.lrr=1)"),
    (["--config", "configs/synth.py:tiny", "--config.optim.lr", "fast"],
     "--config configs/synth.py:tiny: "),
    (["--config=configs/nowhere.py"], "config file 'configs/nowhere.py' does not exist"),
    (["--config=configs/synth.py:tiny", "--bogus"], "Unknown command line flag 'bogus'"),
])
def test_bad_config_is_one_line(tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "mlst_jax.main", *args, f"--workdir={tmp_path / 'run'}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith(f"python -m mlst_jax.main: error: {message}") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "run").exists()
