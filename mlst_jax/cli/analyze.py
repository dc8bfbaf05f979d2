"""The ``mlst analyze`` command: per-task gradient similarities of a trained run and their analyses."""
from __future__ import annotations

import json

from mlst_jax.jobs.analyze import analyze_run

__all__ = ["add_analyze_command"]


def _analyze(args) -> int:
    r = analyze_run(args.checkpoint, args.multiway, args.out, step=args.step, max_utterances=args.max_utterances,
                    batch_size=args.batch_size, progress=not args.quiet)
    print(json.dumps({
        "step": r["step"], "utterances": r["utterances"],
        "nll": {k: round(v, 4) for k, v in r["nll"].items()},
        "layer_similarity": {str(l.layer): round(l.mean, 4) for l in r["layers"]},
        "files": {k: str(v) for k, v in r["files"].items()},
    }, ensure_ascii=False))
    return 0


def add_analyze_command(subparsers) -> None:
    """Registers ``analyze`` on an argparse subparsers object (``func`` returns an exit status; bad input
    raises ``ValueError``)."""
    p = subparsers.add_parser(
        "analyze", help="per-task gradient similarities of a trained run on a multi-way aligned split",
        description="Computes every target language's gradient of the cross-entropy on the multi-way aligned "
                    "utterances of SPLIT (the run's corpus, data.manual_dir) and writes quadruplets.csv, "
                    "layer_similarity.{csv,png} and language_similarity.{csv,png} into --out.")
    p.add_argument("--checkpoint", "--workdir", dest="checkpoint", required=True, metavar="RUN",
                   help="the trained run's directory (checkpoints/, config.json, vocab/), as for mlst differentiate; "
                        "--workdir is an alias")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--multiway", required=True, metavar="SPLIT", help="MuST-C split, e.g. tst-COMMON or dev")
    p.add_argument("--max-utterances", type=int, default=None, help="use only the first N aligned utterances")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per batch (each in every language)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_analyze)
