"""The main job end to end at smoke-test size (`configs/synth.py:demo_tiny`): every stage runs and the report
holds what it should."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mlst_jax import cli
from mlst_jax.jobs import demo
from mlst_jax.train.config import MUSTC_LANGS

pytestmark = pytest.mark.slow

CONFIG = f"{demo.CONFIG.rpartition(':')[0]}:demo_tiny"  # the main job's config file, smoke-test variant


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`python -m mlst_jax.jobs.demo` on one CPU device (as a user runs it), the tiny config and corpus."""
    workdir = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "mlst_jax.jobs.demo", "--workdir", str(workdir), "--config", CONFIG,
                           "--size", "tiny"], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = re.findall(r"^\[demo [0-9:]+\] ([1-5])/5", proc.stdout, re.M)
    assert sorted(set(stages)) == ["1", "2", "3", "4", "5"], proc.stdout[-3000:]
    assert proc.stdout.rstrip().splitlines()[-1] == f"report: {workdir / 'report.md'}"
    return workdir, workdir / "report.md"


def params_of(capsys, strategy: str) -> dict:
    capsys.readouterr()
    assert cli.main(["params", "--config", CONFIG, "--strategy", strategy, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_table(demo_run, capsys):
    workdir, report = demo_run
    rows = {r["system"]: r for r in json.loads((workdir / "results.json").read_text())["rows"]}
    assert list(rows) == ["multilingual", "joint_ft", "enc", "random@2.0", "grad@2.0"]
    shared = params_of(capsys, "multilingual")["total_params"]
    for name in ("multilingual", "joint_ft"):
        assert rows[name]["params"] == shared and rows[name]["multiple"] == 1.0
    enc = params_of(capsys, "enc")
    assert rows["enc"]["params"] == enc["total_params"]
    assert rows["enc"]["multiple"] == pytest.approx(enc["multiple"])
    assert rows["random@2.0"]["params"] == params_of(capsys, "random@2.0")["total_params"]  # same seed, same plan
    for name in ("random@2.0", "grad@2.0"):
        assert rows[name]["multiple"] == pytest.approx(2.0, rel=0.03)
        assert rows[name]["params"] < params_of(capsys, "random@3.5")["total_params"]  # below the cap
    for r in rows.values():
        bleu = [r[l] for l in MUSTC_LANGS]
        assert all(0.0 <= b <= 100.0 for b in bleu)
        assert r["avg"] == pytest.approx(np.mean(bleu))
        written = workdir / "runs" / r["system"].replace("@", "_") / "eval" / "tst-COMMON"
        for lang in MUSTC_LANGS:
            hyps, refs = ((written / f"{lang}.{ext}").read_text().splitlines() for ext in ("hyp", "ref"))
            assert len(hyps) == len(refs) > 0
    text = report.read_text()
    assert json.loads((workdir / "corpus" / "manifest.json").read_text())["lexicon"] == "demo"  # the config's
    assert "Corpus: synthetic, size 'tiny' (48 training utterances per direction), lexicon 'demo'" in text
    for name, r in rows.items():
        line = next(l for l in text.splitlines() if l.startswith(f"| {name} |"))
        assert f"{r['params'] / 1e6:.2f}M" in line and f"{r['avg']:.2f} |" in line
    assert not any("(cap)" in line for line in text.splitlines() if line.startswith("| "))  # 2x is reachable
    verdict = re.search(r"\*\*Verdict\.\*\* (.*)", text).group(1)
    assert re.fullmatch(r"grad@2\.0 \(.*\) (beat|did not beat) random@2\.0 \(.*\) on this run\. "
                        r"grad@2\.0 \(.*\) (beat|did not beat) enc \(.*\) on this run\.", verdict)


def test_shared_model_trains_with_the_auxiliary_ctc_loss(demo_run):
    workdir, _ = demo_run
    for run in ("multilingual", "grad_2.0"):
        logged = [json.loads(l) for l in (workdir / "runs" / run / "metrics.jsonl").read_text().splitlines()]
        ctc = [m["ctc"] for m in logged if m.get("split") == "train"]
        assert ctc and all(0.0 < c < 1e3 for c in ctc), ctc


def test_similarity_figures_and_quadruplets(demo_run):
    workdir, report = demo_run
    analysis = workdir / "analysis"
    for png in ("layer_similarity.png", "language_similarity.png"):
        assert (analysis / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"analysis/{png}" in report.read_text()
    with open(analysis / "quadruplets.csv") as f:
        quads = list(csv.DictReader(f))
    pairs = len(MUSTC_LANGS) * (len(MUSTC_LANGS) - 1) // 2
    units = {(q["unit"], q["copy"]) for q in quads}
    assert len(quads) == len(units) * pairs  # one cosine per unit and language pair of the shared model
    assert all(-1.0 <= float(q["cosine"]) <= 1.0 for q in quads)


def test_a_preempted_stage_stops_the_demo(capsys):
    demo._stop_if_preempted({"step": 7, "preempted": False})
    with pytest.raises(SystemExit) as e:
        demo._stop_if_preempted({"step": 7, "preempted": True})
    assert e.value.code == 143
    assert "stopped by SIGTERM at step 7 (saved); run the demo again" in capsys.readouterr().out
