"""Sharing strategies of seed 000: every strategy returns a `SharingPlan` over the S2T Transformer's params.

- `multilingual`: everything shared; `bilingual`: every leaf has one copy per language; `adapters`: only
  the bottleneck adapters (a model with `adapter_dim > 0`) are language-specific.
- Heuristic `enc[+part]`: the encoder is shared. `enc` gives every language its own decoder (embeddings and
  output projection included). In `enc+part` the listed decoder part is shared, the decoder embeddings,
  output projection and final LayerNorm stay shared, and everything else in the decoder layers (their
  LayerNorms included) is language-specific.
- `random@X` / `grad@X`: split *differentiable units* (the decoder layers' projections with their biases,
  and their LayerNorms) until the model reaches X times the shared model's size. A split that reaches the
  budget is kept (the overshoot is at most one unit), and with nothing left to split the plan stops at
  every unit fully language-specific (3.5X at the paper config).

Gradient-guided splitting (`grad_plan`): each copy group of a unit is scored by the lowest pairwise cosine
similarity of its languages' gradients; the lowest-scoring group is split first. A group splits in two
around its least similar pair (the two seeds); every other language joins the seed it is more similar to
(ties go to the first seed). Both halves go back into the queue, scored by the same similarities.
"""
from __future__ import annotations

import heapq
import math
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from mlst_jax.finetune import adapters
from mlst_jax.models.params import path_names
from mlst_jax.sharing.plan import CopyTable, SharingPlan, Unit, unit_of

__all__ = ["HEURISTIC_PARTS", "STRATEGY_PATTERN", "SCANNABLE", "parse_strategy", "make_plan", "differentiable_units",
           "random_plan", "grad_plan", "unit_sizes", "budget_reached", "splittable", "adapter_plan"]

ATTENTIONS = ("self_attn", "encoder_attn")
# The decoder-layer units each heuristic keeps shared (a unit is named by its last two path names).
HEURISTIC_PARTS: dict[str, frozenset[str]] = {
    "self_attn": frozenset(f"self_attn/{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")),
    "cross_attn": frozenset(f"encoder_attn/{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")),
    "kv": frozenset(f"{a}/{p}" for a in ATTENTIONS for p in ("k_proj", "v_proj")),
    "qk": frozenset(f"{a}/{p}" for a in ATTENTIONS for p in ("q_proj", "k_proj")),
    "qkv": frozenset(f"{a}/{p}" for a in ATTENTIONS for p in ("q_proj", "k_proj", "v_proj")),
    "qkvo": frozenset(f"{a}/{p}" for a in ATTENTIONS for p in ("q_proj", "k_proj", "v_proj", "out_proj")),
    "ffn": frozenset(("ffn/fc1", "ffn/fc2")),
}
# The strategies that fit scanned layer stacks (`model.scan_layers`, leaves [L, ...]): nothing or everything is
# language-specific. The others are defined over the units of single layers (`decoder/layers_3/fc1`).
SCANNABLE = ("multilingual", "bilingual")
STRATEGY_PATTERN = re.compile(r"^(?P<name>multilingual|bilingual|adapters|enc(\+(?P<part>[a-z_]+))?|(?P<kind>random|grad)@(?P<x>[0-9.]+))$")


def parse_strategy(strategy: str) -> tuple[str, str | None, float | None]:
    """'enc+ffn' -> ('enc', 'ffn', None); 'grad@2.0' -> ('grad', None, 2.0); 'bilingual' -> ('bilingual', None, None)."""
    m = STRATEGY_PATTERN.match(strategy)
    if not m or (m.group("part") and m.group("part") not in HEURISTIC_PARTS):
        raise ValueError(f"unknown sharing strategy {strategy!r}: use multilingual, bilingual, adapters, enc, "
                         f"enc+{{{','.join(HEURISTIC_PARTS)}}}, random@X or grad@X")
    if m.group("kind"):
        x = float(m.group("x"))
        if x < 1.0:
            raise ValueError(f"sharing strategy {strategy!r}: a budget below 1 (the shared model's size) cannot be reached")
        return m.group("kind"), None, x
    if m.group("part"):
        return "enc", m.group("part"), None
    return m.group("name"), None, None


def _is_decoder_layer(u: Unit) -> bool:
    return len(u) >= 2 and u[0] == "decoder" and u[1].startswith("layers_")


def differentiable_units(plan_or_params: Any) -> list[Unit]:
    """The decoder layers' units, in pytree order (the candidates of random@X and grad@X)."""
    if isinstance(plan_or_params, SharingPlan):
        names = [n for n, _ in plan_or_params.leaves()]
    else:
        names = [path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(plan_or_params)[0]]
    return list(dict.fromkeys(unit_of(n) for n in names if _is_decoder_layer(unit_of(n))))


def unit_sizes(base_params: Any) -> dict[Unit, int]:
    """Parameters per unit (one copy) of base parameters."""
    out: dict[Unit, int] = {}
    for p, x in jax.tree_util.tree_flatten_with_path(base_params)[0]:
        u = unit_of(path_names(p))
        out[u] = out.get(u, 0) + math.prod(x.shape)
    return out


def make_plan(strategy: str, base_params: Any, langs: Sequence[str], *, seed: int = 0,
              similarity: Mapping[Unit, np.ndarray] | None = None) -> SharingPlan:
    """The plan of `strategy` for base (possibly abstract) parameters; `grad@X` needs `similarity`
    ({unit: [n, n] cosine matrix}, see `mlst_jax.sharing.gradients`)."""
    kind, part, x = parse_strategy(strategy)
    n = len(langs)
    if kind == "multilingual":
        return SharingPlan.shared(base_params, langs)
    if kind == "bilingual":
        return SharingPlan.from_units(base_params, langs, lambda u: CopyTable.separate(n))
    if kind == "adapters":
        return adapter_plan(base_params, langs)
    if kind == "enc":
        shared = HEURISTIC_PARTS[part] if part else frozenset()

        def table(u: Unit):
            if u[:1] != ("decoder",):
                return None
            if part is None:
                return CopyTable.separate(n)
            if not _is_decoder_layer(u) or "/".join(u[-2:]) in shared:
                return None
            return CopyTable.separate(n)
        return SharingPlan.from_units(base_params, langs, table)
    start = SharingPlan.shared(base_params, langs)
    if kind == "random":
        return random_plan(start, base_params, x, seed=seed)
    if similarity is None:
        raise ValueError(f"{strategy}: gradient-guided sharing needs per-task gradient similarities "
                         f"(mlst differentiate computes them from a trained checkpoint)")
    return grad_plan(start, base_params, x, similarity)


def budget_reached(plan: SharingPlan, base: Any, multiple: float) -> bool:
    """Whether `plan` holds at least `multiple` × the shared model's parameters."""
    shared = SharingPlan.shared(base, plan.langs).num_params(base)
    return plan.num_params(base) >= round(multiple * shared)


def splittable(plan: SharingPlan) -> bool:
    """Whether some differentiable unit still has a copy shared by two or more languages (False at the cap,
    where random@X and grad@X stop whatever X is)."""
    units = plan.units()
    return any(len(g) > 1 for u in differentiable_units(plan) for g in units[u].groups())


def adapter_plan(base_params: Any, langs: Sequence[str]):
    """SharingPlan with one copy of every adapter unit per language in `langs` and everything else shared.

    `base_params` are unshared parameters (arrays or shapes) of a model with `adapter_dim > 0`.
    """
    units = set(adapters.adapter_units(base_params))
    if not units:
        raise ValueError("adapter_plan: the parameters have no adapters (build the model with adapter_dim > 0, "
                         "or add them with add_adapters)")
    separate = CopyTable.separate(len(langs))
    return SharingPlan.from_units(base_params, langs, lambda u: separate if tuple(u) in units else None)


def _budget(plan: SharingPlan, base_params: Any, multiple: float) -> tuple[int, int]:
    shared = SharingPlan.shared(base_params, plan.langs).num_params(base_params)
    return plan.num_params(base_params), int(round(multiple * shared))


def random_plan(plan: SharingPlan, base_params: Any, multiple: float, seed: int = 0) -> SharingPlan:
    """Splits random (unit, copy group) pairs into two random halves until `multiple` × the shared size."""
    rng = np.random.default_rng(seed)
    sizes = unit_sizes(base_params)
    total, budget = _budget(plan, base_params, multiple)
    tables = plan.units()
    units = differentiable_units(plan)
    while total < budget:
        cands = [(u, g) for u in units for g in tables[u].groups() if len(g) > 1]
        if not cands:
            break
        u, group = cands[rng.integers(len(cands))]
        k = int(rng.integers(1, len(group)))
        tables[u] = _split_table(tables[u], rng.permutation(np.array(group))[:k].tolist())
        total += sizes[u]
    return _with_tables(plan, base_params, tables)


def _split_table(t: CopyTable, langs: Sequence[int]) -> CopyTable:
    raw = tuple(t.num_copies if l in set(langs) else c for l, c in enumerate(t.copy_of))
    order: dict[int, int] = {}
    return CopyTable(tuple(order.setdefault(c, len(order)) for c in raw))


def _with_tables(plan: SharingPlan, base_params: Any, tables: Mapping[Unit, CopyTable]) -> SharingPlan:
    return SharingPlan.from_units(base_params, plan.langs, lambda u: tables[u])


def split_group(group: Sequence[int], sim: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two halves of `group` around its least similar pair (see the module docstring)."""
    pairs = [(sim[a, b], a, b) for i, a in enumerate(group) for b in group[i + 1:]]
    _, a, b = min(pairs)
    left, right = [a], [b]
    for l in group:
        if l not in (a, b):
            (left if sim[l, a] >= sim[l, b] else right).append(l)
    return tuple(sorted(left)), tuple(sorted(right))


def grad_plan(plan: SharingPlan, base_params: Any, multiple: float,
              similarity: Mapping[Unit, np.ndarray]) -> SharingPlan:
    """Gradient-guided differentiation of `plan` up to `multiple` × the shared size (module docstring)."""
    sizes = unit_sizes(base_params)
    total, budget = _budget(plan, base_params, multiple)
    heap: list[tuple[float, int, Unit, tuple[int, ...]]] = []
    tables = plan.units()
    for u in differentiable_units(plan):
        if u not in similarity:
            raise ValueError(f"no gradient similarity for unit {'/'.join(u)}")
        for g in tables[u].groups():
            _push(heap, u, g, np.asarray(similarity[u]))
    while total < budget and heap:
        _, _, u, group = heapq.heappop(heap)
        left, right = split_group(group, np.asarray(similarity[u]))
        tables[u] = _split_table(tables[u], right)
        total += sizes[u]
        for half in (left, right):
            _push(heap, u, half, np.asarray(similarity[u]))
    return _with_tables(plan, base_params, tables)


def _push(heap: list, u: Unit, group: tuple[int, ...], sim: np.ndarray) -> None:
    if len(group) > 1:
        lowest = min(float(sim[a, b]) for i, a in enumerate(group) for b in group[i + 1:])
        heapq.heappush(heap, (lowest, len(heap), u, tuple(group)))
