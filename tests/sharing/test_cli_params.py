"""`mlst params` at the paper config reproduces seed 000 Table 1's sizes without allocating weights."""
import json
from pathlib import Path

import pytest

from mlst_jax.cli import main

CONFIG = f"{Path(__file__).resolve().parents[2] / 'configs' / 'mustc.py'}:multilingual"


def params_json(capsys, *args):
    assert main(["params", "--config", CONFIG, *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("strategy,total,paper", [
    ("multilingual", 76_327_936, 76.3), ("enc", 324_584_448, 324.6), ("enc+kv", 208_771_072, 208.8),
    ("enc+qkv", 186_707_968, 186.7), ("enc+ffn", 164_709_376, 164.7), ("bilingual", 610_623_488, 610.6)])
def test_heuristic_sizes(capsys, strategy, total, paper):
    out = params_json(capsys, "--strategy", strategy)
    assert out["total_params"] == total and round(total / 1e6, 1) == paper
    assert out["multiple"] == pytest.approx(total / 76_327_936)
    assert sum(out["breakdown"].values()) == total


@pytest.mark.parametrize("strategy", ["random@2.0", "grad@2.0", "random@3.0", "grad@1.5"])
def test_budget_sizes(capsys, strategy):
    x = float(strategy.split("@")[1])
    out = params_json(capsys, "--strategy", strategy)
    assert x <= out["multiple"] <= 1.03 * x
    assert out["total_params"] >= x * 76_327_936


def test_cap_and_text_output(capsys):
    assert params_json(capsys, "--strategy", "grad@3.5")["total_params"] == 252_897_280
    assert main(["params", "--config", CONFIG, "--strategy", "enc+qkvo"]) == 0
    text = capsys.readouterr().out
    assert "164,644,864" in text and "2.16x" in text and "decoder/layers_0" in text
    assert main(["params", "--config", CONFIG, "--strategy", "enc+nothing"]) == 2
    assert "unknown sharing strategy" in capsys.readouterr().err
