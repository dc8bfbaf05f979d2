"""Direction selection, zero-shot sets and the Table-6-style BLEU matrix; the miniature's data helpers."""
import numpy as np
import pytest

from mlst_jax.data.vocab import EOS_ID, PAD_ID
from mlst_jax.xmef import data as xdata
from mlst_jax.xmef.directions import average, bleu_matrix, parse_directions, zero_shot
from mlst_jax.xmef.pretrain import add_noise, char_error_rate

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


def test_char_vocab_and_ctc_decoding():
    v = xdata.CharVocab.from_texts(["ab", "ba c"])
    assert len(v) == 6 and v.encode("abz") == [2, 3, 5]  # blank, " abc", unknown
    assert v.decode_ctc([0, 2, 2, 0, 2, 3, 3, 0, 1]) == "aab "
    assert char_error_rate(["abc", ""], ["abd", "xy"]) == pytest.approx(3 / 5)


def test_decoder_batch_and_waveforms():
    inputs, labels, weights = xdata.decoder_batch([[7, 10, 11, EOS_ID], [8, EOS_ID]], 5)
    np.testing.assert_array_equal(inputs, [[EOS_ID, 7, 10, 11, EOS_ID], [EOS_ID, 8, EOS_ID, PAD_ID, PAD_ID]])
    np.testing.assert_array_equal(labels, [[7, 10, 11, EOS_ID, PAD_ID], [8, EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    np.testing.assert_array_equal(weights, [[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]])
    w, n = xdata.waveform_batch([np.arange(4.0), np.ones(7)], 5)
    assert n.tolist() == [4, 5] and w.shape == (2, 5) and w[0, 4] == 0.0
    assert abs(w[0, :4].mean()) < 1e-6 and abs(w[0, :4].std() - 1) < 1e-3


def test_span_noise_masks_about_the_ratio():
    rng = np.random.default_rng(0)
    ids = list(range(10, 30))
    out = add_noise(ids, rng, ratio=0.35)
    kept = [t for t in out if t != xdata.MASK_ID]
    assert xdata.MASK_ID in out and 6 <= len(kept) <= 13 and kept == sorted(kept)
