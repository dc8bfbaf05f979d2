"""Bootstrap intervals and paired tests give sacreBLEU's own numbers (its command line on the same files)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlst_jax.evaluate import corpus_bleu
from mlst_jax.evaluate.significance import (bootstrap_ci, compare_systems, paired_bootstrap, pooled, pooled_bleu,
                                            read_eval, verdict)

WORDS = "the a cat dog sat ran on under mat house red big small today again and".split()


def _corpora():
    """References and three systems over 60 sentences: `weak` drops a third of the words, `close` is `weak` with
    two sentences fixed, `strong` replaces one word in ten."""
    rng = np.random.default_rng(0)
    refs = [" ".join(rng.choice(WORDS, int(rng.integers(5, 12)))) for _ in range(60)]
    weak = [" ".join(w for w in r.split() if rng.random() > 0.33) for r in refs]
    close = refs[:2] + weak[2:]
    strong = [" ".join(w if rng.random() > 0.1 else "x" for w in r.split()) for r in refs]
    return refs, {"weak": weak, "close": close, "strong": strong}


REFS, SYSTEMS = _corpora()


def _sacrebleu_paired(tmp_path, refs, systems):
    """`sacrebleu REF -i BASELINE SYSTEM... --paired-bs -f json` (1,000 resamples, seed 12345): {name: fields}."""
    files = []
    for name, lines in [("refs", refs), *systems]:
        (tmp_path / name).write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
        files.append(name)
    env = {k: v for k, v in os.environ.items() if k != "SACREBLEU_SEED"}
    out = subprocess.run([sys.executable, "-m", "sacrebleu", files[0], "-i", *files[1:], "--paired-bs", "-m", "bleu",
                          "-tok", "13a", "-f", "json"], capture_output=True, text=True, check=True, env=env,
                         cwd=tmp_path).stdout
    return {r["system"].removeprefix("Baseline: "): r["BLEU"] for r in json.loads(out)}


def test_paired_bootstrap_equals_sacrebleus(tmp_path):
    systems = [("close", SYSTEMS["close"]), ("strong", SYSTEMS["strong"])]
    expected = _sacrebleu_paired(tmp_path, REFS, [("weak", SYSTEMS["weak"]), *systems])
    got = paired_bootstrap(REFS, ("weak", SYSTEMS["weak"]), systems)
    assert list(got) == ["weak", "close", "strong"]
    for name, r in got.items():
        assert r.__dict__ == expected[name], name
    assert got["strong"].p_value < 0.01 < 0.05 < got["close"].p_value  # what the fixture was built for
    assert "SACREBLEU_SEED" not in os.environ  # the seed is set for the test only


def test_bootstrap_interval_is_sacrebleus(tmp_path):
    expected = _sacrebleu_paired(tmp_path, REFS, [("weak", SYSTEMS["weak"]), ("strong", SYSTEMS["strong"])])
    for name in ("weak", "strong"):
        low, high = bootstrap_ci({"de": (SYSTEMS[name], REFS)})["de"]
        assert 0.5 * (high - low) == pytest.approx(expected[name]["ci"], abs=1e-12)
        assert low <= corpus_bleu(SYSTEMS[name], REFS, "de").score <= high
    half = len(REFS) // 2
    split = {"de": (SYSTEMS["weak"][:half], REFS[:half]), "fr": (SYSTEMS["weak"][half:], REFS[half:])}
    score, (low, high) = pooled_bleu(split)
    assert score == expected["weak"]["score"]  # the pooled corpus is the same
    assert 0.5 * (high - low) == pytest.approx(expected["weak"]["ci"], abs=1e-12)
    # a language that always scores 100 halves the other's interval and shifts it to 50 + x / 2
    ci = bootstrap_ci({"de": (SYSTEMS["weak"], REFS), "fr": (REFS, REFS)})
    assert ci["fr"] == pytest.approx([100.0, 100.0])
    assert ci["avg"] == pytest.approx([(100.0 + x) / 2 for x in ci["de"]])
    assert ci["de"] == bootstrap_ci({"de": (SYSTEMS["weak"], REFS)})["de"]
    assert bootstrap_ci({"de": (SYSTEMS["weak"], REFS)}, seed=7)["de"] != ci["de"]


def test_compare_systems_pooled_and_per_language():
    half = len(REFS) // 2
    corpora = {name: {"de": (hyps[:half], REFS[:half]), "fr": (hyps[half:], REFS[half:])}
               for name, hyps in SYSTEMS.items()}
    entries = compare_systems(corpora, [("strong", "weak"), ("close", "weak"), ("strong", "close")])
    assert [(e["system"], e["baseline"]) for e in entries] == [("strong", "weak"), ("close", "weak"),
                                                              ("strong", "close")]
    pooled_test = paired_bootstrap(REFS, ("weak", SYSTEMS["weak"]), [("strong", SYSTEMS["strong"]),
                                                                      ("close", SYSTEMS["close"])])
    for e in entries[:2]:
        r = pooled_test[e["system"]]
        assert (e["bleu"], e["baseline_bleu"], e["p_value"]) == (r.score, pooled_test["weak"].score, r.p_value)
        assert e["delta"] == r.score - pooled_test["weak"].score
    de = paired_bootstrap(REFS[:half], ("weak", SYSTEMS["weak"][:half]), [("strong", SYSTEMS["strong"][:half])])
    assert entries[0]["languages"]["de"]["p_value"] == de["strong"].p_value
    assert entries[0]["languages"]["de"]["delta"] == de["strong"].score - de["weak"].score
    assert entries[0]["verdict"] == "significantly better" and entries[0]["delta"] > 0
    assert entries[1]["verdict"] == f"no significant difference (p = {entries[1]['p_value']:.3f})"
    with pytest.raises(ValueError, match="different references"):
        compare_systems({**corpora, "other": {"de": corpora["weak"]["fr"], "fr": corpora["weak"]["de"]}},
                        [("other", "weak")])


def test_verdict_and_pooling():
    assert verdict(0.8, 0.001) == "significantly better"
    assert verdict(-0.8, 0.049) == "significantly worse"
    assert verdict(0.8, 0.05) == "no significant difference (p = 0.050)"
    assert verdict(0.0, 0.001) == "no significant difference (equal BLEU)"
    same = paired_bootstrap(REFS, ("weak", SYSTEMS["weak"]), [("again", SYSTEMS["weak"])])["again"]
    assert same.p_value == 1 / 1001  # why equal scores get no verdict from p
    assert pooled({"de": (["a"], ["b"]), "fr": (["c"], ["d"])}) == (["a", "c"], ["b", "d"], "13a")
    with pytest.raises(ValueError, match="different tokenizers"):
        pooled({"de": (["a"], ["b"]), "ja": (["c"], ["d"])})


def test_read_eval(tmp_path):
    for lang, hyps, refs in (("de", ["ein Haus", "", "zwei"], ["ein Haus", "nichts", "zwei"]), ("fr", ["un"], ["un"])):
        for ext, lines in (("hyp", hyps), ("ref", refs)):
            (tmp_path / f"{lang}.{ext}").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    assert read_eval(tmp_path, ["de", "fr"]) == {"de": (["ein Haus", "", "zwei"], ["ein Haus", "nichts", "zwei"]),
                                                "fr": (["un"], ["un"])}
    (tmp_path / "fr.ref").write_text("un\ndeux\n", encoding="utf-8")
    with pytest.raises(ValueError, match="1 hypotheses but 2 references"):
        read_eval(tmp_path, ["fr"])
