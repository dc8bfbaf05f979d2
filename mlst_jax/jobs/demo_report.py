"""The main job's statistics and report (`mlst_jax/jobs/demo.py`, stage 5): per system its BLEU with 95% bootstrap
intervals and the learning rates it trained at, paired bootstrap tests between systems, the spread over random
sharing seeds, the similarity figures' findings; `report.md` renders them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mlst_jax.evaluate.significance import ALPHA, N_SAMPLES, SEED, bootstrap_ci, pooled_bleu
from mlst_jax.train.metrics import read_metrics

__all__ = ["statistics_row", "comparison_pairs", "seed_spread", "render"]

PAPER_FIG2 = (0.179, 0.701)  # seed 000 Fig. 2: mean similarity of the first and the last decoder layer


def statistics_row(run: Path, corpus: dict, langs: Sequence[str]) -> dict[str, Any]:
    """A system's row fields beside its BLEU: `bleu_ci95` (of `avg`, the mean over languages), `lang_ci95`,
    `pooled_bleu` and `pooled_ci95` (the pooled test set), and `lr_range` (the learning rate of the run's first and
    last logged update)."""
    ci = bootstrap_ci({lang: corpus[lang] for lang in langs})
    pooled, pooled_ci = pooled_bleu(corpus)
    logged = read_metrics(run)
    return {"bleu_ci95": ci["avg"], "lang_ci95": {lang: ci[lang] for lang in langs}, "pooled_bleu": pooled,
            "pooled_ci95": pooled_ci, "lr_range": [logged[0]["lr"], logged[-1]["lr"]]}


def comparison_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """(system, baseline): every system against the multilingual model, then grad@X against each random@X (every
    seed) and against enc."""
    pairs = [(n, "multilingual") for n in names if n != "multilingual"]
    for grad in (n for n in names if n.startswith("grad@")):
        budget = grad.removeprefix("grad@")
        pairs += [(grad, n) for n in names if n.split(" ")[0] == f"random@{budget}"]
        pairs += [(grad, "enc")] if "enc" in names else []
    return pairs


def seed_spread(rows: Sequence[dict]) -> dict[str, Any]:
    """The random@X rows' average BLEU over their sharing seeds: `mean` and `sd` (sample standard deviation;
    None for one seed)."""
    rows = [r for r in rows if "seed" in r]
    avg = [r["avg"] for r in rows]
    return {"system": rows[0]["system"], "seeds": [r["seed"] for r in rows], "avg": avg, "mean": float(np.mean(avg)),
            "sd": float(np.std(avg, ddof=1)) if len(avg) > 1 else None}


# -- report.md ------------------------------------------------------------------------------------------------


def _ci(value: float, ci: Sequence[float]) -> str:
    return f"{value:.2f} ({ci[0]:.1f}–{ci[1]:.1f})"


def _capped(row: dict) -> str:
    """A mark for a budget the model cannot reach (every splittable unit already split)."""
    name = row["system"].split(" ")[0]
    if "@" in name and row["multiple"] < float(name.split("@")[1]) - 0.01:
        return " (cap)"
    return ""


def _table(rows: Sequence[dict], langs: Sequence[str]) -> str:
    head = "| system | #params | multiple | lr | " + " | ".join(langs) + " | avg | pooled |"
    sep = "|" + "---|" * (6 + len(langs))
    body = [f"| {r['system']} | {r['params'] / 1e6:.2f}M | {r['multiple']:.2f}x{_capped(r)} | "
            f"{r['lr_range'][0]:.1e} → {r['lr_range'][1]:.1e} | "
            + " | ".join(_ci(r[l], r["lang_ci95"][l]) for l in langs)
            + f" | {_ci(r['avg'], r['bleu_ci95'])} | {_ci(r['pooled_bleu'], r['pooled_ci95'])} |" for r in rows]
    return "\n".join([head, sep, *body])


def _pooled_width(rows: Sequence[dict], n_sentences: int) -> str:
    widths = [r["pooled_ci95"][1] - r["pooled_ci95"][0] for r in rows]
    lo, hi = min(widths), max(widths)
    can = "can" if hi < 0.5 else "cannot"
    return (f"The pooled test set ({n_sentences} sentences) gives 95% intervals {lo:.2f}–{hi:.2f} BLEU wide (the "
            "table's last column). Two systems whose intervals do not overlap differ by more than that width, so "
            f"comparing intervals {can} separate differences of 0.5 BLEU; the paired test below resamples the same "
            "sentences for both systems and is the one that decides.")


def _delta_p(c: dict) -> tuple[str, str]:
    """Δ and p as the tables show them: no p for equal scores (sacreBLEU's p is not meaningful there)."""
    return f"{c['delta']:+.2f}", "—" if c["delta"] == 0 else f"{c['p_value']:.3f}"


def _comparisons(comparisons: Sequence[dict], langs: Sequence[str]) -> str:
    head = ["| system | baseline | pooled BLEU | Δ | p | verdict | languages better / worse (p < 0.05) |",
            "|---|---|---|---|---|---|---|"]
    body = []
    for c in comparisons:
        per = c["languages"].values()
        better = sum(v["verdict"] == "significantly better" for v in per)
        worse = sum(v["verdict"] == "significantly worse" for v in per)
        delta, p = _delta_p(c)
        body.append(f"| {c['system']} | {c['baseline']} | {c['bleu']:.2f} vs {c['baseline_bleu']:.2f} | {delta} | "
                    f"{p} | {c['verdict']} | {better} / {worse} of {len(per)} |")
    lang_head = ["| system | baseline | " + " | ".join(langs) + " |", "|" + "---|" * (2 + len(langs))]
    lang_body = [f"| {c['system']} | {c['baseline']} | "
                 + " | ".join("{} ({})".format(*_delta_p(c["languages"][l])) for l in langs) + " |"
                 for c in comparisons]
    return "\n".join(head + body) + "\n\nPer language, Δ BLEU (p):\n\n" + "\n".join(lang_head + lang_body)


def _verdict(comparisons: Sequence[dict]) -> str:
    by = [c for c in comparisons if c["system"].startswith("grad@") and c["baseline"] != "multilingual"]
    return " ".join(f"{c['system']} vs {c['baseline']}: {c['delta']:+.2f} pooled BLEU, {c['verdict']}." for c in by)


def _seeds(spread: dict) -> str:
    if spread["sd"] is None:
        return (f"{spread['system']} is one draw of a random plan (sharing seed {spread['seeds'][0]}); "
                "`--seeds N` trains N of them.")
    return (f"{spread['system']} over {len(spread['seeds'])} sharing seeds ({', '.join(map(str, spread['seeds']))}; "
            f"a row each above): average BLEU {spread['mean']:.2f} ± {spread['sd']:.2f} (mean ± sd).")


def _rho(s: dict) -> str:
    """"ρ (p)" of a `depth_trend` correlation."""
    rho = "undefined" if s["rho"] is None else f"{s['rho']:+.2f}"
    p = "no p-value" if s["p_value"] is None else f"p = {s['p_value']:.3g}"
    return f"{rho} ({p})"


def _depth(d: dict) -> str:
    means = ", ".join(f"layer {l} {m:.3f}" for l, m in zip(d["layers"], d["means"]))
    units, layers = d["by_units"], d["by_layers"]
    if units["rho"] is None or units["p_value"] is None:
        finding = "no rank correlation with depth can be computed"
    else:
        direction = "more" if units["rho"] > 0 else "less"
        sig = "significant" if units["p_value"] < ALPHA else "not significant"
        finding = f"deeper layers have {direction} similar task gradients ({sig} at {ALPHA})"
    return (f"Mean similarity per decoder layer: {means}; last minus first {d['last_minus_first']:+.3f} (seed 000 "
            f"Fig. 2: {PAPER_FIG2[0]} first vs {PAPER_FIG2[1]} last). Spearman's ρ with depth over the "
            f"{units['n']} decoder-layer units (each unit's mean cosine): {_rho(units)}; over the {layers['n']} layer "
            f"means: {_rho(layers)}. Here {finding}.")


def _families(f: dict | None) -> str:
    if f is None:
        return "The languages do not form pairs both within and across families: no family contrast."
    groups: dict[str, list[str]] = {}
    for lang, fam in f["families"].items():
        groups.setdefault(fam, []).append(lang)
    names = "; ".join(f"{fam} {', '.join(ls)}" for fam, ls in groups.items())
    more = "more" if f["difference"] > 0 else "not more"
    sig = "significant" if f["p_value"] < ALPHA else "not significant"
    return (f"Language pairs within a family ({names}): mean similarity {f['within']['mean']:.3f} over "
            f"{len(f['within']['pairs'])} pairs; across families: {f['across']['mean']:.3f} over "
            f"{f['across']['pairs']} pairs; difference {f['difference']:+.3f}, one-sided permutation "
            f"p = {f['p_value']:.3g} ({f['n_permutations']:,} reassignments of the languages to the families, seed "
            f"{f['seed']}). Here pairs within a family are {more} similar than pairs across ({sig} at {ALPHA}).")


def _ctc_note(weight: float) -> str:
    if not weight:
        return ""
    return (f" Every system trains with the auxiliary CTC loss on the English transcript (weight {weight:g}; "
            "docs/training.md), standing in for the ASR-pretrained encoder of the paper's recipe.")


def _corpus_note(manifest: dict) -> str:
    if not manifest:
        return ""
    mustc = manifest.get("sizes", {}).get("mustc", {})
    return (f"Corpus: synthetic, size {manifest.get('size')!r} ({mustc.get('train')} training utterances per "
            f"direction), lexicon {manifest['lexicon']!r} (mlst_jax/data/synthetic/lexicon/subsets.json), "
            f"seed {manifest.get('seed')}.\n")


def render(results: dict, langs: Sequence[str], layers: Sequence, shared_steps: int, extra: int,
           ctc_weight: float = 0.0, manifest: dict | None = None) -> str:
    """report.md from `results` (results.json's content) and the analysis's `LayerSimilarity` rows."""
    rows, comparisons = results["rows"], results["comparisons"]
    n_sentences = results["significance"]["pooled_sentences"]
    layer_rows = "\n".join(f"| {l.layer} | {l.mean:.4f} | {l.count} |" for l in layers)
    times = "\n".join(f"| {k} | {v / 60:.1f} min |" for k, v in results["timings"].items())
    return f"""# Miniature Table 1 (seed 000) on the synthetic corpus

{_corpus_note(manifest or {})}Fully shared model: {shared_steps} steps; every other system: {extra} more steps from \
it.{_ctc_note(ctc_weight)}
Test split, sacreBLEU (13a) with beam search; parameters counted over the stored copies. "(cap)": the
budget is above what splitting every decoder-layer unit per language reaches for this model size.
Hypotheses and references: `runs/<system>/eval/<split>/<lang>.hyp` and `.ref`.

Each BLEU carries its 95% bootstrap interval in parentheses ({N_SAMPLES:,} resamples, seed {SEED}): per language,
of that language's corpus BLEU; for avg (the mean over languages), of the mean: every resample redraws each
language's test sentences with replacement and averages the languages' BLEU; pooled: the BLEU of every language's
test sentences scored as one corpus (what the paired tests compare), with its interval. lr: the learning rate of the
system's first and last logged update (its run's metrics.jsonl).

{_table(rows, langs)}

{_seeds(results["random_seeds"])}

## Significance

Paired bootstrap resampling (sacreBLEU's `PairedTest`, {N_SAMPLES:,} resamples, seed {SEED}) of every system
against the multilingual model, and of grad against random and enc, on the pooled test set (its BLEU is not the
average over languages) and per language; p < {ALPHA} is significant.

{_pooled_width(rows, n_sentences)}

{_comparisons(comparisons, langs)}

**Verdict.** {_verdict(comparisons)}

## Gradient similarity (grad@2.0's task gradients of the shared model on the multi-way dev set)

Mean cosine similarity per decoder layer (Fig. 2):

| layer | mean similarity | pairs |
|---|---|---|
{layer_rows}

![layer similarity](analysis/layer_similarity.png)

{_depth(results["findings"]["depth"])}

Language x language similarity averaged over layers (Fig. 3):

![language similarity](analysis/language_similarity.png)

{_families(results["findings"]["families"])}

Quadruplets (unit, copy, lang_j, lang_k, cosine): `analysis/quadruplets.csv`.

## Time

| stage | wall |
|---|---|
{times}
"""
