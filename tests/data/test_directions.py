"""Direction selection, zero-shot sets and the Table-6-style BLEU matrix; the miniature's CER."""
import pytest

from mlst_jax.data.directions import average, bleu_matrix, parse_directions, zero_shot
from mlst_jax.jobs.miniature import char_error_rate

LANGS = ("en", "de", "fr", "es")


def test_named_direction_sets():
    assert parse_directions("x-en", LANGS) == [("de", "en"), ("fr", "en"), ("es", "en")]
    assert parse_directions("en-x", LANGS) == [("en", "de"), ("en", "fr"), ("en", "es")]
    assert parse_directions("english-centric", LANGS) == parse_directions("x-en,en-x", LANGS)
    assert len(parse_directions("m2m", LANGS)) == 12
    assert parse_directions("de-en, en-fr,de-en", LANGS) == [("de", "en"), ("en", "fr")]
    for bad in ("de-it", "de-de", "deen", ""):
        with pytest.raises(ValueError):
            parse_directions(bad, LANGS)
    with pytest.raises(ValueError, match="pivot"):
        parse_directions("x-en", ("de", "fr"))


def test_zero_shot_is_the_complement_of_supervised():
    sup = parse_directions("english-centric", LANGS)
    zs = zero_shot(sup, LANGS)
    assert len(zs) == 6 and ("de", "fr") in zs and ("fr", "de") in zs and not set(zs) & set(sup)
    assert zero_shot(parse_directions("m2m", LANGS), LANGS) == []


def test_bleu_matrix_marks_supervised_cells():
    sup = [("de", "en"), ("en", "de")]
    scores = {"de-en": 10.0, "en-de": 12.34, "de-fr": 3.0}
    text = bleu_matrix(scores, ("en", "de", "fr"), sup, baseline={"de-en": 1.0})
    rows = text.splitlines()
    assert rows[0].split() == ["src\\tgt", "en", "de", "fr"]
    assert rows[1].split() == ["en→", "-/12.3*", "-"]
    assert rows[2].split() == ["de→", "1.0/10.0*", "-/3.0"]
    assert average(scores, sup) == pytest.approx(11.17) and average(scores, [("fr", "de")]) is None


def test_char_error_rate():
    assert char_error_rate(["abc", ""], ["abd", "xy"]) == pytest.approx(3 / 5)
    assert char_error_rate(["same"], ["same"]) == 0.0 and char_error_rate([], []) == 0.0
