"""The ``mlst data`` subcommands: ``synth`` (synthetic corpora), ``prepare`` (TFDS build) and ``vocab``."""
from __future__ import annotations

from pathlib import Path

from mlst_jax.data.layouts import SkipReport, read_text_lines
from mlst_jax.data.synthetic.corpus import synthesize_corpus
from mlst_jax.data.synthetic.grammar import LANGS, lexicon_subsets
from mlst_jax.data.tfds_builders import BUILDERS, prepared_builder, tfds_split_name
from mlst_jax.data.vocab import train_vocab

__all__ = ["add_data_commands"]

DATASETS = ("mustc", "covost2", "europarl_st", "synthetic")
LAYOUTS = ("mustc", "covost2", "europarl_st")
SIZES = ("tiny", "demo", "large")


def _synth(args) -> int:
    layouts = [s.strip() for s in args.layouts.split(",") if s.strip()]
    unknown = [s for s in layouts if s not in LAYOUTS]
    if unknown or not layouts:
        raise ValueError(f"--layouts: unknown layout(s) {unknown or args.layouts!r}; choose from {','.join(LAYOUTS)}")
    langs = tuple(s.strip() for s in args.langs.split(",") if s.strip())
    m = synthesize_corpus(args.out, args.size, args.seed, layouts, noise_snr_db=args.noise_snr, workers=args.workers,
                          progress=not args.quiet, overwrite=args.overwrite, lexicon=args.lexicon, langs=langs,
                          max_words=args.max_words)
    for layout, e in m["layouts"].items():
        per_split = ", ".join(f"{k} {v}" for k, v in next(iter(e["directions"].values())).items())
        print(f"{layout}: {len(e['directions'])} directions, {e['utterances']} recorded utterances "
              f"(per direction: {per_split}), {e['hours']:.2f} h of audio")
    print(f"total: {m['utterances']} utterances, {m['seconds'] / 3600:.2f} h of audio, "
          f"{m['wall_time_s']:.1f} s with {m['workers']} worker(s); manifest: {Path(args.out) / 'manifest.json'}")
    return 0


def _prepare(args) -> int:
    dataset, manual = args.dataset, Path(args.manual_dir)
    if not manual.is_dir():
        raise ValueError(f"--manual-dir {manual} is not a directory")
    if dataset == "synthetic":
        if not (manual / "mustc").is_dir():
            raise ValueError(f"{manual} holds no mustc/ folder; run `mlst data synth --out {manual}` first")
        dataset, manual = "mustc", manual / "mustc"
    builder_cls = BUILDERS[dataset]
    configs = [s.strip() for s in (args.config or "").split(",") if s.strip()] or builder_cls.directions(manual)
    if not configs:
        raise ValueError(f"{manual}: no {dataset} direction found; name the configs with --config")
    known = [c.name for c in builder_cls.BUILDER_CONFIGS]
    if unknown := [c for c in configs if c not in known]:
        raise ValueError(f"--config: {dataset} has no config {', '.join(unknown)} (it has "
                         f"{', '.join(c for c in known if not c.endswith('.fbank'))}, each also as <name>.fbank)")
    skipped, built = SkipReport(), False
    for config in configs:
        builder = prepared_builder(dataset, manual, args.data_dir, config)
        counts = ", ".join(f"{s} {builder.info.splits[tfds_split_name(s)].num_examples}"
                           for s in builder.corpus_splits())
        print(f"{builder.full_config_name} examples: {counts}" + ("" if builder.built else " (up to date)"))
        built |= builder.built
        for report in builder.skip_reports.values():
            skipped.merge(report)
    if not built:
        print("nothing rebuilt: the prepared data is up to date")
    elif skipped.total:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.counts.items()))
        print(f"skipped {skipped.total} utterance(s) ({reasons}); the warnings above list them")
    else:
        print("no utterances skipped")
    return 0


def _mustc_root(path: Path) -> Path:
    if (path / "mustc").is_dir() and not any(path.glob("en-*/data")):
        return path / "mustc"
    return path


def _vocab(args) -> int:
    root = _mustc_root(Path(args.manual_dir))
    pairs = sorted(d.name for d in root.glob("en-*") if (d / "data").is_dir()) if root.is_dir() else []
    if not pairs:
        raise ValueError(f"{root}: no MuST-C direction folders (en-xx/data) found")
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    texts, langs = [], []
    for pair in pairs:
        tgt = pair.split("-", 1)[1]
        found = [root / pair / "data" / s / "txt" / f"{s}.{tgt}" for s in splits]
        found = [p for p in found if p.is_file()]
        if found:
            langs.append(tgt)
        for path in found:
            texts.extend(read_text_lines(path))
    if not texts:
        raise ValueError(f"{root}: no target text for split(s) {','.join(splits)} in {', '.join(pairs)}")
    if args.size < 4 + len(langs) + 1:
        raise ValueError(f"--size {args.size} is too small for 4 specials and {len(langs)} language tags")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    vocab = train_vocab(texts, args.out, args.size, langs)
    print(f"vocabulary: {len(vocab)} pieces ({len(langs)} languages: {' '.join(langs)}; {len(texts)} sentences) "
          f"-> {args.out}.model")
    return 0


def add_data_commands(subparsers) -> None:
    """Register the ``data`` command (``synth``, ``prepare``, ``vocab``) on an argparse subparsers object.

    Each subcommand sets ``func`` to a function of the parsed args returning an exit status; they raise
    ``ValueError`` for bad input.
    """
    data = subparsers.add_parser("data", help="synthetic corpora, TFDS preparation and target vocabularies")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("synth", help="generate a synthetic multilingual speech-translation corpus")
    p.add_argument("--out", required=True, help="output root (one folder per layout plus manifest.json)")
    p.add_argument("--size", choices=SIZES, default="tiny",
                   help="tiny: 48/16/16 utterances per direction; demo: MuST-C 10000/300/500; large: 100k "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sentence and voice seed (default: %(default)s)")
    p.add_argument("--lexicon", choices=lexicon_subsets(), default="full",
                   help="the words sentences draw on: full, or demo (26 nouns, 10 adjectives, 16 verbs, numbers up "
                        "to 12; the corpus of `make demo`) (default: %(default)s)")
    p.add_argument("--layouts", default="mustc",
                   help=f"comma-separated layouts to write, a subset of {','.join(LAYOUTS)} (default: %(default)s)")
    p.add_argument("--langs", default=",".join(LANGS), help="comma-separated languages to write, English and at "
                                                            "least one other (default: %(default)s)")
    p.add_argument("--max-words", type=int, default=None,
                   help="only sentences of at most this many English words (default: no limit)")
    p.add_argument("--noise-snr", type=float, default=None,
                   help="add white/pink noise at this SNR in dB (default: no noise)")
    p.add_argument("--workers", type=int, default=None, help="synthesis processes (default: CPU count)")
    p.add_argument("--overwrite", action="store_true", help="replace existing layout folders")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synth)

    p = sub.add_parser("prepare", help="build TFDS ArrayRecord files from a corpus in its original layout, ahead of "
                                       "training (which prepares what it reads itself when missing or stale)")
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="synthetic: the MuST-C layout of a `mlst data synth` output")
    p.add_argument("--manual-dir", required=True, help="corpus root (for synthetic: the synth output root)")
    p.add_argument("--data-dir", required=True, help="TFDS data dir to write into (training's data.data_dir)")
    p.add_argument("--config", default=None,
                   help="comma-separated builder configs, e.g. en-de,en-es or en-de.fbank (training with "
                        "data.features=fbank), multilingual, fr_en (default: every direction in the manual dir, "
                        "audio features: the configs training reads)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("vocab", help="train the joint SentencePiece target vocabulary of a MuST-C root")
    p.add_argument("--manual-dir", required=True, help="MuST-C root (or a `mlst data synth` output root)")
    p.add_argument("--size", type=int, default=10000,
                   help="vocabulary size, specials and language tags included (default: %(default)s)")
    p.add_argument("--out", required=True, help="model prefix: writes <out>.model and <out>.vocab")
    p.add_argument("--splits", default="train",
                   help="comma-separated splits whose target texts are used (default: %(default)s)")
    p.set_defaults(func=_vocab)
