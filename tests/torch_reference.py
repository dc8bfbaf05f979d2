"""Helpers shared by the parity tests against transformers' PyTorch models."""
import functools
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest


def perturb(torch, model):
    """Moves biases and norms away from their defaults so that parity tests see every parameter; eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif "norm" in name and p.ndim == 1:
                p.normal_(1.0, 0.2)
            else:
                p.normal_(0.0, float(np.prod(p.shape[1:])) ** -0.5)
    return model.eval()


class MaxDiffs(dict):
    """The largest |ours - reference| of each named check, printed once the module's tests have run."""

    def record(self, name: str, diff):
        self[name] = max(self.get(name, 0.0), float(diff))
        return diff

    def fixture(self):
        """An autouse module fixture that prints the table."""
        @pytest.fixture(scope="module", autouse=True)
        def report_diffs():
            yield
            print("\nmax |diff| vs HF:", {k: f"{v:.2e}" for k, v in sorted(self.items())})
        return report_diffs


def variant_fixtures(build_case: Callable, variants) -> tuple:
    """Module fixtures over the test cases `build_case(name, tmp_path_factory)` makes, each variant built once per
    module whichever fixtures ask for it: `build` (the case of a variant by name, for a fixture of the one variant a
    check needs) and `case` (parametrized over every variant). Use: `build, case = variant_fixtures(...)`."""
    @pytest.fixture(scope="module", name="build")
    def build_fixture(tmp_path_factory):
        return functools.cache(lambda name: build_case(name, tmp_path_factory))

    @pytest.fixture(scope="module", name="case", params=sorted(variants))
    def case_fixture(request, build):
        return build(request.param)

    return build_fixture, case_fixture


def check_key_error(load: Callable, checkpoint: Path, tmp_path: Path, edit, key: str = "", added: str = ""):
    """`checkpoint` (an HF directory) written to `tmp_path` with its model.safetensors edited: `load(tmp_path)` raises
    a ValueError naming the key and the file; returns the error. `edit`: "delete" (`key` removed), "add" (`added`,
    2 x 2 zeros, added: the error names it), "reshape" (`key` one column short), or a function that edits the state
    dict in place and returns the key the error must name."""
    from safetensors.numpy import load_file, save_file

    state = load_file(checkpoint / "model.safetensors")
    if callable(edit):
        key = edit(state)
    elif edit == "delete":
        del state[key]
    elif edit == "add":
        key = added
        state[key] = np.zeros((2, 2), np.float32)
    else:
        assert edit == "reshape", edit
        state[key] = state[key][:, :-1].copy()
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(checkpoint / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError, match=re.escape(key)) as err:
        load(tmp_path)
    assert "model.safetensors" in str(err.value)
    return err.value
