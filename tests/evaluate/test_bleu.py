"""BLEU / chrF wrappers agree exactly with sacreBLEU."""
import pytest
import sacrebleu

from mlst_jax.evaluate import BleuResult, corpus_bleu, corpus_chrf, score_by_language, tokenizer_for

CORPORA = {
    "en": (["The cat sat on the mat.", "It is raining today, isn't it?", "Hello world"],
           ["The cat is sitting on the mat.", "It's raining today, isn't it?", "Hello, world!"]),
    "de": (["Das Haus ist groß, aber alt.", "Wir sehen uns morgen!", "„Wirklich?“, fragte sie."],
           ["Das Haus ist groß und alt.", "Bis morgen!", "„Wirklich?“, fragte er."]),
    "zh": (["我们今天去公园散步。", "这是一个测试句子", "他说：你好！"],
           ["今天我们去公园散步。", "这是一个测试的句子", "他说：您好！"]),
    "ja": (["今日は良い天気ですね。", "私は学生です", "東京へ行きました！"],
           ["今日はいい天気ですね。", "私は大学生です", "東京に行きました！"]),
}


def test_tokenizer_for():
    assert [tokenizer_for(x) for x in ("zh", "zh-CN", "ja", "JA", "ko", "de", "en")] == [
        "zh", "zh", "char", "char", "13a", "13a", "13a"]


@pytest.mark.parametrize("lang", sorted(CORPORA))
def test_bleu_and_chrf_equal_sacrebleu(lang):
    hyps, refs = CORPORA[lang]
    result = corpus_bleu(hyps, refs, lang)
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenizer_for(lang))
    assert isinstance(result, BleuResult) and 0 < result.score < 100
    assert result.score == expected.score
    assert result.precisions == tuple(expected.precisions)
    assert (result.bp, result.sys_len, result.ref_len) == (expected.bp, expected.sys_len, expected.ref_len)
    assert result.tokenizer == tokenizer_for(lang) and f"tok:{result.tokenizer}" in result.signature
    assert corpus_chrf(hyps, refs) == sacrebleu.corpus_chrf(hyps, [refs]).score


def test_identical_hypotheses_score_100():
    refs = CORPORA["de"][1]
    assert corpus_bleu(refs, refs, "de").score == pytest.approx(100.0)
    assert corpus_chrf(refs, refs) == pytest.approx(100.0)


def test_score_by_language_and_average():
    scores = score_by_language(CORPORA)
    assert set(scores) == {*CORPORA, "avg"}
    for lang, (hyps, refs) in CORPORA.items():
        assert scores[lang] == {"bleu": corpus_bleu(hyps, refs, lang).score, "chrf": corpus_chrf(hyps, refs)}
    for key in ("bleu", "chrf"):
        assert scores["avg"][key] == pytest.approx(sum(scores[l][key] for l in CORPORA) / len(CORPORA))


def test_validation_errors():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"], "en")
    with pytest.raises(ValueError, match="1 hypotheses but 3 references"):
        corpus_chrf(["a"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty"):
        corpus_bleu([], [], "en")
    with pytest.raises(ValueError, match="empty"):
        score_by_language({"en": ([], [])})
