"""The main job end to end at smoke-test size (`configs/synth.py:demo_tiny`, two random sharing seeds): every stage
runs and the report and results.json hold what they should."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu

from mlst_jax import cli
from mlst_jax.jobs import demo
from mlst_jax.sharing.analysis import language_similarity
from mlst_jax.sharing.gradients import read_quadruplets_csv
from mlst_jax.train.config import MUSTC_LANGS

pytestmark = pytest.mark.slow

CONFIG = f"{demo.CONFIG.rpartition(':')[0]}:demo_tiny"  # the main job's config file, smoke-test variant
SYSTEMS = ["multilingual", "joint_ft", "enc", "random@2.0", "random@2.0 (seed 1)", "grad@2.0"]
VERDICT = r"(significantly better|significantly worse|no significant difference \((p = [01]\.\d{3}|equal BLEU)\))"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`python -m mlst_jax.jobs.demo` on one CPU device (as a user runs it), the tiny config and corpus."""
    workdir = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "mlst_jax.jobs.demo", "--workdir", str(workdir), "--config", CONFIG,
                           "--size", "tiny", "--seeds", "2"], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = re.findall(r"^\[demo [0-9:]+\] ([1-5])/5", proc.stdout, re.M)
    assert sorted(set(stages)) == ["1", "2", "3", "4", "5"], proc.stdout[-3000:]
    assert proc.stdout.rstrip().splitlines()[-1] == f"report: {workdir / 'report.md'}"
    return workdir, workdir / "report.md"


def params_of(capsys, strategy: str, seed: int = 0) -> dict:
    capsys.readouterr()
    assert cli.main(["params", "--config", CONFIG, "--strategy", strategy, "--seed", str(seed), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_of(workdir, system):
    """runs/random_2.0_seed1 for 'random@2.0 (seed 1)'."""
    return workdir / "runs" / system.replace("@", "_").replace(" (seed ", "_seed").rstrip(")")


def read_eval(workdir, system, lang):
    written = run_of(workdir, system) / "eval" / "tst-COMMON"
    return [(written / f"{lang}.{ext}").read_text().splitlines() for ext in ("hyp", "ref")]


def test_report_table(demo_run, capsys):
    workdir, report = demo_run
    rows = {r["system"]: r for r in json.loads((workdir / "results.json").read_text())["rows"]}
    assert list(rows) == SYSTEMS
    shared = params_of(capsys, "multilingual")["total_params"]
    for name in ("multilingual", "joint_ft"):
        assert rows[name]["params"] == shared and rows[name]["multiple"] == 1.0
    enc = params_of(capsys, "enc")
    assert rows["enc"]["params"] == enc["total_params"]
    assert rows["enc"]["multiple"] == pytest.approx(enc["multiple"])
    assert rows["random@2.0"]["params"] == params_of(capsys, "random@2.0")["total_params"]  # same seed, same plan
    assert rows["random@2.0 (seed 1)"]["params"] == params_of(capsys, "random@2.0", seed=1)["total_params"]
    assert [rows[n].get("seed") for n in SYSTEMS] == [None, None, None, 0, 1, None]
    for name in ("random@2.0", "random@2.0 (seed 1)", "grad@2.0"):
        assert rows[name]["multiple"] == pytest.approx(2.0, rel=0.03)
        assert rows[name]["params"] < params_of(capsys, "random@3.5")["total_params"]  # below the cap
    for r in rows.values():
        bleu = [r[l] for l in MUSTC_LANGS]
        assert all(0.0 <= b <= 100.0 for b in bleu)
        assert r["avg"] == pytest.approx(np.mean(bleu))
        assert r["bleu_ci95"][0] <= r["avg"] <= r["bleu_ci95"][1]
        assert all(r["lang_ci95"][l][0] <= r[l] <= r["lang_ci95"][l][1] for l in MUSTC_LANGS)
        written = [read_eval(workdir, r["system"], lang) for lang in MUSTC_LANGS]
        assert all(len(hyps) == len(refs) == len(written[0][1]) > 0 for hyps, refs in written)
        pooled = sacrebleu.corpus_bleu([h for hs, _ in written for h in hs], [[x for _, rs in written for x in rs]])
        assert r["pooled_bleu"] == pooled.score and r["pooled_ci95"][0] <= pooled.score <= r["pooled_ci95"][1]
        logged = [json.loads(l) for l in (run_of(workdir, r["system"]) / "metrics.jsonl").read_text().splitlines()]
        lrs = [m["lr"] for m in logged if m["split"] == "train"]
        assert r["lr_range"] == [lrs[0], lrs[-1]] and all(0 < lr <= 2e-3 for lr in lrs)
    text = report.read_text()
    assert json.loads((workdir / "corpus" / "manifest.json").read_text())["lexicon"] == "demo"  # the config's
    assert "Corpus: synthetic, size 'tiny' (48 training utterances per direction), lexicon 'demo'" in text
    for name, r in rows.items():
        line = next(l for l in text.splitlines() if l.startswith(f"| {name} |"))
        (lo, hi), (plo, phi) = r["bleu_ci95"], r["pooled_ci95"]
        assert f"{r['params'] / 1e6:.2f}M" in line
        avg, pooled = f"{r['avg']:.2f} ({lo:.1f}–{hi:.1f})", f"{r['pooled_bleu']:.2f} ({plo:.1f}–{phi:.1f})"
        assert line.endswith(f" | {avg} | {pooled} |")
        assert f" | {r['lr_range'][0]:.1e} → {r['lr_range'][1]:.1e} | " in line
    assert not any("(cap)" in line for line in text.splitlines() if line.startswith("| "))  # 2x is reachable
    spread = json.loads((workdir / "results.json").read_text())["random_seeds"]
    avg = [rows["random@2.0"]["avg"], rows["random@2.0 (seed 1)"]["avg"]]
    assert spread == {"system": "random@2.0", "seeds": [0, 1], "avg": avg, "mean": pytest.approx(np.mean(avg)),
                      "sd": pytest.approx(np.std(avg, ddof=1))}
    assert f"random@2.0 over 2 sharing seeds (0, 1; a row each above): average BLEU {spread['mean']:.2f} ± " in text


def test_comparisons(demo_run):
    workdir, report = demo_run
    results = json.loads((workdir / "results.json").read_text())
    pooled = {r["system"]: r["pooled_bleu"] for r in results["rows"]}
    comparisons = results["comparisons"]
    assert [(c["system"], c["baseline"]) for c in comparisons] == [(s, "multilingual") for s in SYSTEMS[1:]] + [
        ("grad@2.0", "random@2.0"), ("grad@2.0", "random@2.0 (seed 1)"), ("grad@2.0", "enc")]
    for c in comparisons:
        assert (c["bleu"], c["baseline_bleu"]) == (pooled[c["system"]], pooled[c["baseline"]])
        assert c["delta"] == c["bleu"] - c["baseline_bleu"] and 0.0 < c["p_value"] <= 1.0
        assert re.fullmatch(VERDICT, c["verdict"]) and list(c["languages"]) == list(MUSTC_LANGS)
        for lang, v in c["languages"].items():
            hyps, refs = read_eval(workdir, c["system"], lang)
            assert v["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score and 0.0 < v["p_value"] <= 1.0
    sentences = sum(len(read_eval(workdir, "multilingual", lang)[1]) for lang in MUSTC_LANGS)
    assert results["significance"] == {"test": "paired bootstrap resampling (sacrebleu.significance.PairedTest)",
                                       "n_samples": 1000, "seed": 12345, "alpha": 0.05, "pooled_sentences": sentences}
    text = report.read_text()
    assert f"The pooled test set ({sentences} sentences) gives 95% intervals " in text
    verdict = re.search(r"\*\*Verdict\.\*\* (.*)", text).group(1)
    assert re.fullmatch(rf"grad@2\.0 vs random@2\.0: [+-]\d+\.\d\d pooled BLEU, {VERDICT}\. "
                        rf"grad@2\.0 vs random@2\.0 \(seed 1\): [+-]\d+\.\d\d pooled BLEU, {VERDICT}\. "
                        rf"grad@2\.0 vs enc: [+-]\d+\.\d\d pooled BLEU, {VERDICT}\.", verdict)
    for c in comparisons:
        assert f"| {c['system']} | {c['baseline']} | {c['bleu']:.2f} vs {c['baseline_bleu']:.2f} | " in text


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


def test_findings(demo_run):
    workdir, report = demo_run
    found = json.loads((workdir / "results.json").read_text())["findings"]
    with open(workdir / "analysis" / "layer_similarity.csv") as f:
        layers = list(csv.DictReader(f))
    depth = found["depth"]
    assert depth["layers"] == [0, 1] and depth["means"] == pytest.approx([float(l["mean_cosine"]) for l in layers],
                                                                         abs=1e-6)
    assert depth["by_layers"]["n"] == 2 and depth["by_layers"]["p_value"] is None  # two layers: no p-value
    units = {q.unit for q in read_quadruplets_csv(workdir / "analysis" / "quadruplets.csv")}
    assert depth["by_units"]["n"] == len(units) and -1.0 <= depth["by_units"]["rho"] <= 1.0
    assert 0.0 < depth["by_units"]["p_value"] <= 1.0
    families = found["families"]
    langs, sim = language_similarity(read_quadruplets_csv(workdir / "analysis" / "quadruplets.csv"), MUSTC_LANGS)
    within = [sim[langs.index(a), langs.index(b)] for a, b in (p.split("-") for p in families["within"]["pairs"])]
    assert len(within) == 11 and families["within"]["mean"] == pytest.approx(np.mean(within))
    assert families["across"]["pairs"] == 17 and families["difference"] == pytest.approx(
        families["within"]["mean"] - families["across"]["mean"])
    assert 0.0 < families["p_value"] <= 1.0 and families["n_permutations"] == 10_000
    text = report.read_text()
    assert f"last minus first {depth['last_minus_first']:+.3f} (seed 000 Fig. 2: 0.179 first vs 0.701 last)" in text
    assert f"one-sided permutation p = {families['p_value']:.3g}" in text


def test_a_preempted_stage_stops_the_demo(capsys):
    demo._stop_if_preempted({"step": 7, "preempted": False})
    with pytest.raises(SystemExit) as e:
        demo._stop_if_preempted({"step": 7, "preempted": True})
    assert e.value.code == 143
    assert "stopped by SIGTERM at step 7 (saved); run the demo again" in capsys.readouterr().out
