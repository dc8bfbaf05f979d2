"""`mlst params --finetune` at configs/xmef_covost_large.py: seed 001's trained-parameter sizes from shapes only."""
import json
from pathlib import Path

import pytest

from mlst_jax.cli import main

ROOT = Path(__file__).resolve().parents[2]
XMEF = str(ROOT / "configs" / "xmef_covost_large.py")
S2T = f"{ROOT / 'configs' / 'mustc.py'}:multilingual"
TOTAL = 792_989_312


def report(capsys, *args, config=XMEF):
    assert main(["params", "--config", config, *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("variant,trained,paper", [
    ("all", TOTAL, 793.0), ("lna-minimalist", 69_447_680, 69.4), ("lna-minimalist-no-ln", 69_261_312, 69.3),
    ("lna-minimalist-no-ea", 19_066_880, 19.0), ("lna-minimalist+sa-dec", 119_828_480, 119.8),
    ("lna-minimalist+sa-enc", 170_209_280, 170.2), ("lna-ed", 170_209_280, 170.7), ("lna-d", 384_777_856, 384.8)])
def test_sizes_match_the_paper_within_half_a_percent(capsys, variant, trained, paper):
    out = report(capsys, "--finetune", variant)
    assert (out["trained_params"], out["total_params"], out["family"]) == (trained, TOTAL, "xmef")
    assert out["paper_params"] == pytest.approx(paper * 1e6)
    assert abs(out["relative_difference"]) < 0.005
    assert sum(s["trained"] for s in out["sides"].values()) == trained
    assert out["sides"]["adaptor"] == {"trained": 18_880_512, "total": 18_880_512}


def test_lna_e_discrepancy_is_reported(capsys):
    out = report(capsys, "--finetune", "lna-e")
    assert out["trained_params"] == 578_420_736
    assert out["sides"]["decoder"]["trained"] + out["sides"]["adaptor"]["trained"] == 477_550_592  # the paper's
    assert out["relative_difference"] > 0.2 and "decoder + adaptor alone" in out["note"]


def test_default_variant_and_text_output(capsys):
    assert report(capsys)["variant"] == "lna-minimalist"
    assert main(["params", "--config", XMEF, "--finetune", "lna-d"]) == 0
    text = capsys.readouterr().out
    assert "384,777,856 of 792,989,312" in text and "384.8M" in text and "-0.01%" in text


def test_s2t_config_and_errors(capsys):
    out = report(capsys, "--finetune", "lna-d", config=S2T)
    assert (out["family"], out["trained_params"], out["total_params"]) == ("s2t", 47_185_920, 76_327_936)
    assert "paper_params" not in out
    assert main(["params", "--config", XMEF, "--finetune", "lna-x"]) == 2
    assert "unknown xmef finetuning variant 'lna-x'" in capsys.readouterr().err


def test_joint_config_is_1_05b(capsys):
    out = report(capsys, config=XMEF + ":joint")
    assert (out["joint_shared_layers"], out["variant"]) == (12, "all")
    assert out["trained_params"] == out["total_params"] == 1_050_099_328
    assert out["paper_params"] == 1.05e9 and abs(out["relative_difference"]) < 0.005
    lna = report(capsys, "--finetune", "lna-minimalist", config=XMEF + ":joint")
    assert lna["total_params"] == 1_050_099_328 and "paper_params" not in lna
