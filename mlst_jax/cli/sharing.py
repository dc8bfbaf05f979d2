"""`mlst params` (model size of a sharing strategy, or trained parameters of a finetuning variant, without allocating
weights) and `mlst differentiate`."""
from __future__ import annotations

import argparse
import json

import numpy as np

from mlst_jax.jobs.differentiate import differentiate
from mlst_jax.jobs.paper_sizes import finetune_report, format_report
from mlst_jax.sharing.plan import SharingPlan
from mlst_jax.sharing.strategies import differentiable_units, make_plan, parse_strategy
from mlst_jax.train.config import load_config
from mlst_jax.train.tasks import get_task


def _params(args) -> int:
    c = load_config(args.config)
    if getattr(args, "finetune", None) or c.model.family == "xmef":
        report = {"config": args.config, **finetune_report(c, args.finetune)}
        print(json.dumps(report) if args.json else format_report(report))
        return 0
    strategy = args.strategy or c.sharing.strategy
    kind = parse_strategy(strategy)[0]
    langs = tuple(c.data.tgt_langs)
    task = get_task(c)
    base = task.abstract_params(task.model_config(None))
    similarity, note = None, None
    if kind == "grad":
        # Without a trained model the units cannot be ranked; the size follows from the budget rule alone.
        rng = np.random.default_rng(0)
        similarity = {u: rng.uniform(-1, 1, (len(langs),) * 2) for u in differentiable_units(base)}
        note = "grad@X: the size follows the budget rule; which units split needs a trained model (mlst differentiate)"
    plan = make_plan(strategy, base, langs, seed=args.seed, similarity=similarity)
    total = plan.num_params(base)
    shared = SharingPlan.shared(base, langs).num_params(base)
    breakdown = plan.breakdown(base, depth=2)
    specific = sum(t.num_copies > 1 for t in plan.units().values())
    result = {"config": args.config, "strategy": strategy, "langs": list(langs), "total_params": total,
              "shared_params": shared, "multiple": total / shared, "language_specific_units": specific,
              "units": len(plan.units()), "breakdown": breakdown}
    if note:
        result["note"] = note
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{strategy} over {len(langs)} target languages ({', '.join(langs)})")
    print(f"total parameters: {total:,} ({total / 1e6:.1f}M), {total / shared:.2f}x the shared model "
          f"({shared:,}); {specific} of {len(plan.units())} units language-specific")
    width = max(map(len, breakdown))
    for name, n in breakdown.items():
        print(f"  {name:<{width}}  {n:>14,}")
    if note:
        print(note)
    return 0


def _differentiate(args) -> int:
    plan, multiple, capped = differentiate(args.checkpoint, args.out, args.budget, multiway_split=args.multiway,
                                           max_utterances=args.max_utterances, progress=not args.quiet)
    print(json.dumps({"out": args.out, "budget": args.budget, "multiple": round(multiple, 4), "capped": capped,
                      "language_specific_units": sum(t.num_copies > 1 for t in plan.units().values()),
                      "plan": plan.to_json()["tables"] if args.verbose_plan else None}))
    return 0


def add_sharing_commands(sub: argparse._SubParsersAction) -> None:
    """Registers `mlst params` and `mlst differentiate`."""
    p = sub.add_parser("params", help="parameter count of a sharing strategy (no weights are allocated)")
    p.add_argument("--config", required=True, help="experiment config file (path.py or path.py:arg)")
    p.add_argument("--strategy", help="multilingual, bilingual, enc[+part], random@X or grad@X "
                                      "(default: the config's sharing.strategy)")
    p.add_argument("--seed", type=int, default=0, help="random@X seed")
    p.add_argument("--finetune", help="trained vs total parameters of a finetuning variant (mlst_jax.finetune.lna; "
                                      "default for XMEF configs: finetune.trainable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_params)

    p = sub.add_parser("differentiate", help="split the least similar shared parameters of a trained run up to a "
                                             "size budget; writes a run that `mlst train --init` continues")
    p.add_argument("--checkpoint", required=True, help="the trained run's workdir")
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--budget", type=float, required=True, help="model size as a multiple of the shared model")
    p.add_argument("--multiway", help="multi-way aligned split for the task gradients (default: the config's "
                                      "sharing.multiway_split)")
    p.add_argument("--max-utterances", type=int, help="use at most this many multi-way utterances")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose-plan", action="store_true", help="include every leaf's copy table in the output")
    p.set_defaults(func=_differentiate)
