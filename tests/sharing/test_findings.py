"""The figures' findings as numbers (`depth_trend`, `family_contrast`) on quadruplets whose answer is known."""
import itertools

import numpy as np
import pytest

from mlst_jax.sharing.analysis import depth_trend, family_contrast, findings, language_similarity
from mlst_jax.sharing.gradients import Quadruplet

LANGS = ("de", "es", "fr", "it", "nl", "pt", "ro", "ru")
FAMILY = {"de": 0, "nl": 0, "es": 1, "fr": 1, "it": 1, "pt": 1, "ro": 1, "ru": 2}
UNITS = ("self_attn/q_proj", "encoder_attn/k_proj", "ffn/fc1", "ffn/fc2")


def quads(cosine):
    """Every pair of LANGS on 4 units of each of 3 decoder layers, cosine(layer, a, b)."""
    return [Quadruplet(f"decoder/layers_{layer}/{unit}", 0, a, b, cosine(layer, a, b))
            for layer, unit in itertools.product(range(3), UNITS) for a, b in itertools.combinations(LANGS, 2)]


def test_deeper_layers_more_similar():
    rng = np.random.default_rng(0)
    encoder = [Quadruplet("encoder/layers_0/ffn/fc1", 0, "de", "es", -1.0)]  # not a decoder layer: ignored
    trend = depth_trend(quads(lambda layer, a, b: 0.2 + 0.25 * layer + 0.05 * rng.standard_normal()) + encoder)
    assert trend["layers"] == [0, 1, 2]
    assert trend["means"] == pytest.approx([0.2, 0.45, 0.7], abs=0.02)
    assert trend["last_minus_first"] == pytest.approx(trend["last"] - trend["first"]) and trend["last"] > 0.65
    assert trend["by_layers"]["rho"] == pytest.approx(1.0) and trend["by_layers"]["n"] == 3
    units = trend["by_units"]
    assert units["n"] == 12 and units["rho"] > 0.9 and units["p_value"] < 1e-4  # 12 units, ranked by depth


def test_no_trend_and_too_few_layers():
    flat = depth_trend(quads(lambda *_: 0.3))
    assert flat["last_minus_first"] == 0.0
    assert flat["by_units"]["rho"] is None and flat["by_layers"]["rho"] is None  # constant: no rank correlation
    two = depth_trend([q for q in quads(lambda layer, a, b: 0.5 - 0.2 * layer) if "layers_2" not in q.unit])
    assert two["means"] == pytest.approx([0.5, 0.3])
    assert two["by_layers"] == {"rho": pytest.approx(-1.0), "p_value": None, "n": 2}  # two points: no p-value
    assert two["by_units"]["rho"] == pytest.approx(-1.0) and two["by_units"]["n"] == 8
    with pytest.raises(ValueError, match="no decoder-layer"):
        depth_trend([Quadruplet("encoder/layers_0/ffn/fc1", 0, "de", "es", 0.5)])


def test_pairs_within_families_more_similar():
    out = family_contrast(*language_similarity(quads(lambda l, a, b: 0.9 if FAMILY[a] == FAMILY[b] else 0.1)))
    assert out["within"]["pairs"] == ["de-nl"] + [f"{a}-{b}" for a, b in itertools.combinations(
        ("es", "fr", "it", "pt", "ro"), 2)]
    assert out["within"]["mean"] == pytest.approx(0.9) and out["across"]["mean"] == pytest.approx(0.1)
    assert out["across"]["pairs"] == 28 - 11 and out["difference"] == pytest.approx(0.8)
    # only the true assignment (1 of the 8! / (2! 5! 1!) = 168 distinct ones) reaches the observed difference
    assert 1 / 168 / 2 < out["p_value"] < 2 / 168
    assert out["families"]["ru"] == "Slavic" and out["n_permutations"] == 10_000


def test_pairs_across_families_more_similar_and_no_difference():
    reverse = family_contrast(*language_similarity(quads(lambda l, a, b: 0.1 if FAMILY[a] == FAMILY[b] else 0.9)))
    assert reverse["difference"] == pytest.approx(-0.8) and reverse["p_value"] == 1.0
    same = family_contrast(*language_similarity(quads(lambda *_: 0.4)))
    assert same["difference"] == pytest.approx(0.0) and same["p_value"] == 1.0
    assert family_contrast(["de", "nl"], np.eye(2)) is None  # no pair across families
    assert family_contrast(["de", "es", "ru"], np.full((3, 3), 0.5)) is None  # no pair within a family


def test_findings_are_both_and_reproducible():
    q = quads(lambda layer, a, b: 0.1 * layer + (0.3 if FAMILY[a] == FAMILY[b] else 0.0))
    assert findings(q, LANGS) == findings(q, LANGS)
    out = findings(q, LANGS)
    assert out["depth"] == depth_trend(q) and out["families"]["difference"] == pytest.approx(0.3)
