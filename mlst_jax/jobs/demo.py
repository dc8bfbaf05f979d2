"""The main job: a miniature Table 1 of seed 000 (parameter sharing in one-to-many ST) on the synthetic corpus.

    python -m mlst_jax.jobs.demo --workdir workdir/demo      (what `make demo` runs)

Stages (each prints its progress; the stage runs land in `<workdir>/runs/<system>/`):
 1. the synthetic corpus, `demo` size, MuST-C layout, En -> 8 languages, over the config's lexicon subset
    (`demo.lexicon`; `configs/synth.py:demo`: the `demo` subset) (`<workdir>/corpus`);
 2. the fully shared multilingual model (`configs/synth.py:demo`);
 3. from it, each for the same number of extra steps: jointly fine-tuning (the shared model trained on),
    heuristic `enc` (language-specific decoders), `random@2.0` (with `--seeds N`: N of them, sharing seeds
    `sharing.seed` to `sharing.seed + N - 1`), and `grad@2.0` (task gradients on the multi-way aligned dev set,
    the least similar units split up to twice the shared size; parameters and Adam moments split), plus
    `bilingual` with `--bilingual`;
 4. sacreBLEU per language on the test split with beam search, for every system;
 5. statistics (`mlst_jax/jobs/demo_report.py`): 95% bootstrap intervals of every BLEU, the learning rates each
    system trained at, paired bootstrap tests (every system against the multilingual model, grad@2.0 against
    random@2.0 and enc; pooled test set and per language), the spread over random sharing seeds, and the
    similarity figures' findings (depth trend, language families); `<workdir>/results.json` holds them and
    `<workdir>/report.md` shows them with the Table-1-style table, the layer-wise and language-pair gradient
    similarity figures (Fig. 2 and 3) and the quadruplets CSV.
Same seed, same machine: same numbers.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import jax

from mlst_jax.data.synthetic.corpus import synthesize_corpus
from mlst_jax.evaluate.significance import ALPHA, N_SAMPLES, SEED, compare_systems, read_eval
from mlst_jax.jobs.demo_report import comparison_pairs, render, seed_spread, statistics_row
from mlst_jax.jobs.differentiate import differentiate
from mlst_jax.sharing import SharingPlan, base_shapes
from mlst_jax.sharing.analysis import findings, write_analysis
from mlst_jax.sharing.gradients import read_quadruplets_csv
from mlst_jax.train.config import load_config
from mlst_jax.train.run import Run
from mlst_jax.train.trainer import evaluate, train_and_evaluate

CONFIG = f"{Path(__file__).resolve().parents[2] / 'configs' / 'synth.py'}:demo"
SYSTEMS = ("multilingual", "joint_ft", "enc", "random@2.0", "grad@2.0")


class System(NamedTuple):
    """A system of the table: its row name, sharing strategy and seed, and run directory under `runs/`."""

    name: str
    strategy: str
    seed: int
    run: str


def _systems(seeds: int, seed: int, bilingual: bool) -> list[System]:
    """Every system in training order; random@2.0 once per sharing seed from `seed` on, the first under its plain
    name and the others as 'random@2.0 (seed S)' in runs/random_2.0_seedS."""
    out = []
    for name in SYSTEMS + (("bilingual",) if bilingual else ()):
        strategy = "multilingual" if name == "joint_ft" else name
        n = seeds if name.startswith("random@") else 1
        out += [System(name + (f" (seed {seed + i})" if i else ""), strategy, seed + i,
                       name.replace("@", "_") + (f"_seed{seed + i}" if i else "")) for i in range(n)]
    return out


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _config(config: str, corpus: Path, workdir: Path, steps: int, shared_vocab: bool = True, init: str = "",
            **sharing):
    c = load_config(config)
    c.init.run = init
    if init:  # a continued system: the schedule restarts at the shared model's step (init.schedule)
        extra = c.demo.extra_steps or max(1, c.train.max_updates // 4)
        c.optim.lr = c.demo.continue_lr or c.optim.lr
        c.optim.warmup_updates = c.demo.continue_warmup or max(1, extra // 10)
    c.data.manual_dir, c.data.data_dir = str(corpus), str(workdir / "tfds")
    c.data.vocab = str(workdir / "runs" / "multilingual" / "vocab" / "spm.model") if shared_vocab else ""
    c.train.max_updates = steps
    c.sharing.update(sharing)
    return c


def _size(run: Path, langs) -> tuple[int, int]:
    with Run(run) as r:
        plan = r.plan(langs=langs)
        base = base_shapes(r.ckpt.params_shapes(r.latest_step), plan)
    return plan.num_params(base), SharingPlan.shared(base, langs).num_params(base)


class Preempted(SystemExit):
    """SIGTERM stopped a training stage (after saving it): the demo stops too; running it again continues."""


def _stop_if_preempted(result: dict) -> None:
    if result.get("preempted"):
        _say(f"stopped by SIGTERM at step {result['step']} (saved); run the demo again to continue from there")
        raise Preempted(143)


def _corpus_manifest(corpus: Path) -> dict:
    """A synthetic corpus's manifest with its lexicon subset ("full" for corpora written before it was recorded);
    {} when there is none."""
    path = corpus / "manifest.json"
    if not path.is_file():
        return {}
    return {"lexicon": "full", **json.loads(path.read_text(encoding="utf-8"))}


def run_demo(workdir: str | Path, *, bilingual: bool = False, corpus: str | Path | None = None,
             config: str | Path = CONFIG, size: str = "demo", seeds: int = 1) -> Path:
    """Runs every stage into `workdir` (`config`: the shared model's experiment config; `size`: the synthetic
    corpus size; `seeds`: random@2.0 systems, one per sharing seed); returns the report's path."""
    t_start = time.perf_counter()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    config = str(config)
    base_cfg = load_config(config)
    langs = tuple(base_cfg.data.tgt_langs)
    shared_steps = base_cfg.train.max_updates
    extra = base_cfg.demo.extra_steps or max(1, shared_steps // 4)
    lexicon = base_cfg.demo.lexicon
    timings: dict[str, float] = {}
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    shared_system, *systems = _systems(seeds, base_cfg.sharing.seed, bilingual)

    # -- 1. corpus --------------------------------------------------------------------------------------
    corpus = Path(corpus) if corpus else workdir / "corpus"
    if not (corpus / "mustc").is_dir():
        _say(f"1/5 synthesizing the demo corpus into {corpus} (espeak-ng speech, En -> {', '.join(langs)}, "
             f"lexicon {lexicon!r})")
        t = time.perf_counter()
        manifest = synthesize_corpus(corpus, size, layouts=("mustc",), progress=True, lexicon=lexicon)
        timings["corpus"] = time.perf_counter() - t
    else:
        manifest = _corpus_manifest(corpus)
        found = manifest.get("lexicon", "full")
        _say(f"1/5 reusing the corpus in {corpus} (lexicon {found!r})")
        if found != lexicon:
            _say(f"    note: {config} expects lexicon {lexicon!r}; its expected results do not apply")

    # -- 2. the shared model ----------------------------------------------------------------------------
    runs = workdir / "runs"
    shared = runs / "multilingual"
    _say(f"2/5 training the fully shared multilingual model ({shared_steps} steps) in {shared}")
    t = time.perf_counter()
    _stop_if_preempted(train_and_evaluate(_config(config, corpus, workdir, shared_steps, shared_vocab=False), shared))
    timings["multilingual"] = time.perf_counter() - t

    # -- 3. from the shared model -----------------------------------------------------------------------
    total = shared_steps + extra
    for i, s in enumerate(systems):
        run = runs / s.run
        t = time.perf_counter()
        if s.strategy == "grad@2.0":
            diff = runs / "grad_2.0_init"
            if not (diff / "checkpoints").is_dir():
                _say(f"3/5 [{s.name}] task gradients on the multi-way dev set, differentiation up to 2.0x")
                differentiate(shared, diff, 2.0)
            init = diff
        else:
            init = shared
        _say(f"3/5 [{i + 1}/{len(systems)}] {s.name}: {extra} more steps from the shared model")
        _stop_if_preempted(train_and_evaluate(_config(config, corpus, workdir, total, strategy=s.strategy,
                                                      seed=s.seed, init=str(init)), run))
        timings[s.name] = time.perf_counter() - t

    # -- 4. test BLEU -----------------------------------------------------------------------------------
    rows, corpora = [], {}
    for s in [shared_system, *systems]:
        run = runs / s.run
        _say(f"4/5 test BLEU of {s.name}")
        t = time.perf_counter()
        c = _config(config, corpus, workdir, total)
        bleu = evaluate(c, run)
        corpora[s.name] = read_eval(run / "eval" / c.data.test_split, langs)
        timings[f"eval {s.name}"] = time.perf_counter() - t
        n, n_shared = _size(run, langs)
        seed = {"seed": s.seed} if s.strategy.startswith("random@") else {}
        rows.append({"system": s.name, "params": n, "multiple": n / n_shared, **bleu, **seed})
        _say(f"    {s.name}: avg BLEU {bleu['avg']:.1f} ({', '.join(f'{l} {bleu[l]:.1f}' for l in langs)})")

    # -- 5. analyses and report -------------------------------------------------------------------------
    _say("5/5 statistics, similarity analyses and the report")
    t = time.perf_counter()
    for s, row in zip([shared_system, *systems], rows):
        row.update(statistics_row(runs / s.run, corpora[s.name], langs))
    comparisons = compare_systems(corpora, comparison_pairs([r["system"] for r in rows]))
    for cmp in comparisons:
        _say(f"    {cmp['system']} vs {cmp['baseline']}: {cmp['delta']:+.2f} pooled BLEU, {cmp['verdict']}")
    timings["statistics"] = time.perf_counter() - t
    analysis = workdir / "analysis"
    quads_csv = runs / "grad_2.0_init" / "analysis" / "quadruplets.csv"
    analysis.mkdir(exist_ok=True)
    shutil.copy(quads_csv, analysis / "quadruplets.csv")
    quads = read_quadruplets_csv(quads_csv)
    result = write_analysis(analysis, quads, langs)
    timings["total"] = time.perf_counter() - t_start
    results = {"rows": rows, "comparisons": comparisons, "random_seeds": seed_spread(rows),
               "findings": findings(quads, langs),
               "significance": {"test": "paired bootstrap resampling (sacrebleu.significance.PairedTest)",
                                "n_samples": N_SAMPLES, "seed": SEED, "alpha": ALPHA,
                                "pooled_sentences": sum(len(h) for h, _ in corpora[shared_system.name].values())},
               "timings": timings}
    report = workdir / "report.md"
    report.write_text(render(results, langs, result["layers"], shared_steps, extra, base_cfg.optim.ctc_weight,
                             manifest))
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    _say(f"done in {timings['total'] / 60:.1f} min")
    print(f"report: {report}")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="workdir/demo")
    ap.add_argument("--corpus", help="an existing synthetic corpus (default: <workdir>/corpus, made if missing)")
    ap.add_argument("--bilingual", action="store_true", help="also train the bilingual system")
    ap.add_argument("--config", default=str(CONFIG), help="the shared model's experiment config")
    ap.add_argument("--size", default="demo", help="synthetic corpus size when it is made (tiny, demo, large)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="random@2.0 systems to train, one per sharing seed (sharing.seed, sharing.seed + 1, ...)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    jax.config.update("jax_default_matmul_precision", "default")
    if args.seeds < 1:
        ap.error(f"--seeds must be at least 1, got {args.seeds}")
    run_demo(args.workdir, bilingual=args.bilingual, corpus=args.corpus, config=args.config, size=args.size,
             seeds=args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
