"""Bootstrap confidence intervals and paired significance tests of BLEU, on the hypotheses and references an
evaluation writes (`<run>/eval/<split>/<lang>.hyp` and `.ref`).

* `bootstrap_ci`: 95% intervals of each language's BLEU and of their mean over languages (the `avg` of
  `score_by_language`). Each resample draws every language's sentences with replacement (a stratified bootstrap:
  a language keeps its size), scores each language and averages.
* `pooled_bleu`: the pooled test set's BLEU and its 95% interval (every language's sentences as one corpus).
* `paired_bootstrap`: sacreBLEU's paired bootstrap resampling test (`sacrebleu.significance.PairedTest`, `bs`;
  `sacrebleu REF -i BASELINE SYSTEM... --paired-bs`): each system against one baseline on the same resamples.
* `compare_systems`: paired tests of (system, baseline) pairs on the pooled test set and per language, with a
  verdict.

Intervals are drawn as sacreBLEU draws its own and bounded by the order statistics it uses (the 25th and 975th of
1,000 resamples): for one corpus, `sacrebleu --confidence`'s mean ± half the width. 1,000 resamples and seed 12345
(sacreBLEU's default) unless asked otherwise; same inputs, same numbers.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest, Result

from mlst_jax.evaluate.bleu import tokenizer_for

__all__ = ["N_SAMPLES", "SEED", "ALPHA", "read_eval", "pooled", "bootstrap_ci", "pooled_bleu", "paired_bootstrap",
           "compare_systems", "verdict"]

N_SAMPLES = 1000
SEED = 12345
ALPHA = 0.05

Corpus = Mapping[str, tuple[Sequence[str], Sequence[str]]]  # language -> (hypotheses, references)


def read_eval(eval_dir: str | os.PathLike, langs: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
    """`{lang: (hypotheses, references)}` from `<eval_dir>/<lang>.hyp` and `.ref` (every sentence ends with a
    newline)."""
    out = {}
    for lang in langs:
        hyps, refs = ((Path(eval_dir) / f"{lang}.{ext}").read_text(encoding="utf-8").split("\n")[:-1]
                      for ext in ("hyp", "ref"))
        if len(hyps) != len(refs):
            raise ValueError(f"{eval_dir}/{lang}: {len(hyps)} hypotheses but {len(refs)} references")
        out[lang] = (hyps, refs)
    return out


def pooled(corpus: Corpus) -> tuple[list[str], list[str], str]:
    """(hypotheses, references, tokenizer) of every language's sentences as one corpus (languages in order); the
    languages must share a sacreBLEU tokenizer."""
    tokenizers = {tokenizer_for(lang) for lang in corpus}
    if len(tokenizers) != 1:
        raise ValueError(f"cannot pool languages scored with different tokenizers ({sorted(tokenizers)})")
    hyps = [h for hs, _ in corpus.values() for h in hs]
    refs = [r for _, rs in corpus.values() for r in rs]
    return hyps, refs, tokenizers.pop()


def _resampled_bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str, n_samples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """BLEU of `n_samples` resamples of the corpus drawn as sacreBLEU draws them, from its per-sentence
    statistics (float32, as sacreBLEU resamples them)."""
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"got {len(hyps)} hypotheses and {len(refs)} references")
    metric = BLEU(tokenize=tokenize)
    idxs = rng.choice(len(hyps), size=(n_samples, len(hyps)), replace=True)
    stats = np.array(metric._extract_corpus_statistics(list(hyps), [list(refs)]), dtype="float32")
    return np.array([metric._compute_score_from_stats(s.sum(0)).score for s in stats[idxs]])


def _interval(scores: np.ndarray) -> list[float]:
    """sacreBLEU's 95% bounds (`significance.estimate_ci`): the (n // 40)-th smallest and largest scores."""
    scores = np.sort(scores)
    k = len(scores) // 40
    return [float(scores[k]), float(scores[len(scores) - k - 1])]


def bootstrap_ci(corpus: Corpus, n_samples: int = N_SAMPLES, seed: int = SEED) -> dict[str, list[float]]:
    """`{lang: [low, high], "avg": [low, high]}`: 95% bootstrap intervals of each language's BLEU and of the mean
    over languages (see the module docstring); languages draw their resamples in order from one generator."""
    if not corpus:
        raise ValueError("no languages to score")
    rng = np.random.default_rng(seed)
    scores = {lang: _resampled_bleu(hyps, refs, tokenizer_for(lang), n_samples, rng)
              for lang, (hyps, refs) in corpus.items()}
    out = {lang: _interval(s) for lang, s in scores.items()}
    out["avg"] = _interval(np.mean(list(scores.values()), axis=0))
    return out


def pooled_bleu(corpus: Corpus, n_samples: int = N_SAMPLES, seed: int = SEED) -> tuple[float, list[float]]:
    """(BLEU, [low, high]): the pooled test set's (`pooled`) corpus BLEU and its 95% bootstrap interval."""
    hyps, refs, tokenize = pooled(corpus)
    score = BLEU(tokenize=tokenize).corpus_score(hyps, [refs]).score
    return score, _interval(_resampled_bleu(hyps, refs, tokenize, n_samples, np.random.default_rng(seed)))


@contextlib.contextmanager
def _sacrebleu_seed(seed: int) -> Iterator[None]:
    """PairedTest reads its seed from SACREBLEU_SEED only; set it for the duration of one test."""
    if seed <= 0:
        raise ValueError(f"seed must be positive (sacreBLEU treats 0 as unseeded), got {seed}")
    before = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if before is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = before


def paired_bootstrap(refs: Sequence[str], baseline: tuple[str, Sequence[str]],
                     systems: Sequence[tuple[str, Sequence[str]]], tokenize: str = "13a",
                     n_samples: int = N_SAMPLES, seed: int = SEED) -> dict[str, Result]:
    """sacreBLEU's paired bootstrap test of each `(name, hypotheses)` in `systems` against `baseline`:
    `{name: Result}` (baseline included) with `score` (corpus BLEU), `p_value` (None for the baseline), and the
    bootstrap `mean` and `ci` (half the 95% interval's width)."""
    with _sacrebleu_seed(seed):
        test = PairedTest([(baseline[0], list(baseline[1])), *((n, list(h)) for n, h in systems)],
                          {"BLEU": BLEU(tokenize=tokenize)}, [list(refs)], test_type="bs", n_samples=n_samples)
        _, scores = test()
    return dict(zip(scores["System"], scores["BLEU"]))


def verdict(delta: float, p_value: float, alpha: float = ALPHA) -> str:
    """'significantly better' / 'significantly worse' (p < alpha) or 'no significant difference (p = …)'; equal
    scores are no difference whatever p says (sacreBLEU's p of two systems that score alike on every resample is
    its smallest, 1 / (n + 1))."""
    if delta == 0:
        return "no significant difference (equal BLEU)"
    if p_value < alpha:
        return "significantly better" if delta > 0 else "significantly worse"
    return f"no significant difference (p = {p_value:.3f})"


def _entry(system: str, baseline: str, res: Mapping[str, Result], alpha: float) -> dict:
    sys_, base = res[system], res[baseline]
    delta = sys_.score - base.score
    return {"bleu": sys_.score, "baseline_bleu": base.score, "delta": delta, "p_value": sys_.p_value,
            "verdict": verdict(delta, sys_.p_value, alpha)}


def compare_systems(corpora: Mapping[str, Corpus], pairs: Sequence[tuple[str, str]], n_samples: int = N_SAMPLES,
                    seed: int = SEED, alpha: float = ALPHA) -> list[dict]:
    """Paired bootstrap tests of `(system, baseline)` pairs (names in `corpora`, whose corpora hold the same
    languages and references) on the pooled test set and per language. One entry per pair, in order:
    `{"system", "baseline", "bleu", "baseline_bleu", "delta", "p_value", "verdict"}` of the pooled test set, and
    `"languages": {lang: {the same five}}`."""
    by_baseline: dict[str, list[str]] = {}
    for system, baseline in pairs:
        by_baseline.setdefault(baseline, []).append(system)
    results: dict[tuple[str, str], dict] = {}
    for baseline, systems in by_baseline.items():
        base = corpora[baseline]
        for s in systems:
            if any(list(corpora[s][lang][1]) != list(refs) for lang, (_, refs) in base.items()):
                raise ValueError(f"{s} and {baseline} were scored against different references")
        hyps, refs, tokenize = pooled(base)
        res = paired_bootstrap(refs, (baseline, hyps), [(s, pooled(corpora[s])[0]) for s in systems], tokenize,
                               n_samples, seed)
        per_lang = {lang: paired_bootstrap(refs_l, (baseline, hyps_l), [(s, corpora[s][lang][0]) for s in systems],
                                           tokenizer_for(lang), n_samples, seed)
                    for lang, (hyps_l, refs_l) in base.items()}
        for s in systems:
            results[s, baseline] = {"system": s, "baseline": baseline, **_entry(s, baseline, res, alpha),
                                    "languages": {lang: _entry(s, baseline, r, alpha) for lang, r in per_lang.items()}}
    return [results[pair] for pair in pairs]
