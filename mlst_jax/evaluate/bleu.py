"""Corpus BLEU / chrF with sacreBLEU, tokenizer chosen per target language.

Japanese is scored at character level (``char``) as in the seed paper, independently of whether
MeCab is installed, so scores are reproducible across environments; Chinese uses sacreBLEU's
``zh`` tokenizer; every other language (Korean included) uses the standard ``13a``.
"""
from __future__ import annotations

from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF

_TOKENIZERS = {"zh": "zh", "ja": "char"}


@dataclass(frozen=True)
class BleuResult:
    """Corpus BLEU with its components and sacreBLEU signature."""

    score: float
    precisions: tuple[float, ...]
    bp: float
    sys_len: int
    ref_len: int
    tokenizer: str
    signature: str


def tokenizer_for(lang: str) -> str:
    """sacreBLEU tokenizer name for a target language code (``zh-CN`` is treated as ``zh``)."""
    return _TOKENIZERS.get(lang.lower().replace("_", "-").split("-")[0], "13a")


def _check(hyps: list[str], refs: list[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("cannot score an empty corpus")


def corpus_bleu(hyps: list[str], refs: list[str], lang: str) -> BleuResult:
    """Corpus BLEU of ``hyps`` against one reference each, tokenised for ``lang``."""
    _check(hyps, refs)
    tokenizer = tokenizer_for(lang)
    metric = BLEU(tokenize=tokenizer)
    result = metric.corpus_score(list(hyps), [list(refs)])
    return BleuResult(
        score=result.score, precisions=tuple(result.precisions), bp=result.bp,
        sys_len=result.sys_len, ref_len=result.ref_len, tokenizer=tokenizer,
        signature=str(metric.get_signature()),
    )


def corpus_chrf(hyps: list[str], refs: list[str]) -> float:
    """Corpus chrF2 (sacreBLEU defaults) of ``hyps`` against one reference each."""
    _check(hyps, refs)
    return CHRF().corpus_score(list(hyps), [list(refs)]).score


def score_by_language(data: dict[str, tuple[list[str], list[str]]]) -> dict[str, dict[str, float]]:
    """``{lang: (hyps, refs)}`` -> ``{lang: {"bleu", "chrf"}}`` plus ``"avg"``: the mean over languages."""
    if not data:
        raise ValueError("no languages to score")
    scores = {
        lang: {"bleu": corpus_bleu(hyps, refs, lang).score, "chrf": corpus_chrf(hyps, refs)}
        for lang, (hyps, refs) in data.items()
    }
    scores["avg"] = {key: sum(s[key] for s in scores.values()) / len(data) for key in ("bleu", "chrf")}
    return scores
