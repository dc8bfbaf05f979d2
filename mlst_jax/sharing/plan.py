"""Sharing plans: which per-language copy of every parameter each target language uses.

A `SharingPlan` over target languages `langs` holds, for every parameter leaf, a `CopyTable`: language
index -> copy index. A leaf whose table has C > 1 copies is stored with a leading copies axis [C, ...];
a shared leaf (C = 1) is stored as is, so a fully shared model's parameters are the plain model's. The
plan's `tables` is a pytree with the parameters' structure, so `jax.tree.map(f, params, plan.tables)` works.

Leaves are grouped into *units*: the module that owns them (an attention projection's kernel and bias, a
LayerNorm's scale and bias). Every leaf of a unit has the same table; `split` acts on units.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlst_jax.models.params import path_names

__all__ = ["CopyTable", "SharingPlan", "Unit", "transfer_leaf", "unit_of", "base_shapes"]

Unit = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CopyTable:
    """`copy_of[l]` is the copy language l uses; copies are numbered 0..C-1 in order of first use."""

    copy_of: tuple[int, ...]

    def __post_init__(self):
        seen: list[int] = []
        for c in self.copy_of:
            if c not in seen:
                seen.append(c)
        if seen != list(range(len(seen))):
            raise ValueError(f"copy indices must be numbered in order of first use, got {self.copy_of}")

    @classmethod
    def shared(cls, n_langs: int) -> "CopyTable":
        return cls((0,) * n_langs)

    @classmethod
    def separate(cls, n_langs: int) -> "CopyTable":
        return cls(tuple(range(n_langs)))

    @property
    def num_copies(self) -> int:
        return max(self.copy_of) + 1

    def members(self, copy: int) -> tuple[int, ...]:
        """Language indices that use `copy`."""
        return tuple(l for l, c in enumerate(self.copy_of) if c == copy)

    def groups(self) -> list[tuple[int, ...]]:
        """Language indices of every copy, in copy order."""
        return [self.members(c) for c in range(self.num_copies)]


def _flat(tree) -> list[tuple[tuple[str, ...], Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, CopyTable))[0]
    return [(path_names(p), x) for p, x in leaves]


class SharingPlan:
    """Per-leaf copy tables over `langs`; see the module docstring."""

    def __init__(self, langs: Sequence[str], tables: Any):
        self.langs = tuple(langs)
        self.tables = tables
        for names, t in _flat(tables):
            if not isinstance(t, CopyTable) or len(t.copy_of) != len(self.langs):
                raise ValueError(f"{'/'.join(names)}: expected a CopyTable over {len(self.langs)} languages, got {t}")

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def shared(cls, params: Any, langs: Sequence[str]) -> "SharingPlan":
        """Every leaf shared (the multilingual model). `params` may be abstract (shapes only)."""
        return cls(langs, jax.tree.map(lambda _: CopyTable.shared(len(langs)), params))

    @classmethod
    def from_units(cls, params: Any, langs: Sequence[str], tables: Callable[[Unit], CopyTable | None]) -> "SharingPlan":
        """A plan whose unit `u` gets `tables(u)` (None: shared). `params` are base (unshared) parameters."""
        shared = CopyTable.shared(len(langs))
        return cls(langs, jax.tree_util.tree_map_with_path(
            lambda p, _: tables(unit_of(path_names(p))) or shared, params))

    # -- queries --------------------------------------------------------------------------------------

    def leaves(self) -> list[tuple[tuple[str, ...], CopyTable]]:
        """(leaf path, table) in pytree order."""
        return _flat(self.tables)

    def units(self) -> dict[Unit, CopyTable]:
        """Unit path -> its copy table (one entry per unit, in pytree order)."""
        out: dict[Unit, CopyTable] = {}
        for names, t in self.leaves():
            u = unit_of(names)
            if out.setdefault(u, t) != t:
                raise ValueError(f"unit {'/'.join(u)} has leaves with different copy tables")
        return out

    @property
    def is_shared(self) -> bool:
        return all(t.num_copies == 1 for _, t in self.leaves())

    def lang_index(self, lang: str | int) -> int:
        if isinstance(lang, (int, np.integer)):
            if not 0 <= int(lang) < len(self.langs):
                raise ValueError(f"language index {lang} out of range for {self.langs}")
            return int(lang)
        if lang not in self.langs:
            raise ValueError(f"language {lang!r} is not one of the plan's {self.langs}")
        return self.langs.index(lang)

    def num_params(self, base_params: Any) -> int:
        """Σ copies × size over leaves of the base (unshared; possibly abstract) parameters."""
        return sum(t.num_copies * math.prod(x.shape)
                   for (_, t), x in zip(self.leaves(), jax.tree.leaves(base_params)))

    def breakdown(self, base_params: Any, depth: int = 2) -> dict[str, int]:
        """Parameter count per module path prefix of `depth` names (e.g. 'decoder/layers_0')."""
        out: dict[str, int] = {}
        for (names, t), x in zip(self.leaves(), jax.tree.leaves(base_params)):
            key = "/".join(names[:depth])
            out[key] = out.get(key, 0) + t.num_copies * math.prod(x.shape)
        return out

    # -- parameters -----------------------------------------------------------------------------------

    def abstract(self, base_params: Any) -> Any:
        """ShapeDtypeStructs of the plan's stored parameters given base (unshared) parameters."""
        return jax.tree.map(lambda x, t: jax.ShapeDtypeStruct(_stored_shape(x.shape, t), x.dtype),
                            base_params, self.tables)

    def expand(self, base_params: Any) -> Any:
        """Stored parameters whose every copy starts from the base (shared) parameters."""
        return jax.tree.map(lambda x, t: x if t.num_copies == 1 else jnp.broadcast_to(x, (t.num_copies,) + x.shape),
                            base_params, self.tables)

    def view(self, params: Any, lang: str | int) -> Any:
        """The plain (unshared) parameters language `lang` uses."""
        l = self.lang_index(lang)
        return jax.tree.map(lambda x, t: x if t.num_copies == 1 else x[t.copy_of[l]], params, self.tables)

    def gather(self, params: Any, lang_ids: jax.Array) -> tuple[Any, Any]:
        """(per-group parameters, vmap in_axes) for a stratified batch whose groups have languages `lang_ids`
        [G]: language-specific leaves become [G, ...] (axis 0), shared leaves stay as they are (None)."""
        def one(x, t):
            if t.num_copies == 1:
                return x
            return jnp.take(x, jnp.asarray(t.copy_of, jnp.int32)[lang_ids], axis=0)
        gathered = jax.tree.map(one, params, self.tables)
        axes = jax.tree.map(lambda t: None if t.num_copies == 1 else 0, self.tables,
                            is_leaf=lambda x: isinstance(x, CopyTable))
        return gathered, axes

    # -- differentiation ------------------------------------------------------------------------------

    def split(self, unit: Unit, langs: Iterable[str | int]) -> "SharingPlan":
        """A plan in which `langs` (all currently on one copy of `unit`) move to a new copy of that unit."""
        ids = sorted({self.lang_index(l) for l in langs})
        table = self.units().get(tuple(unit))
        if table is None:
            raise ValueError(f"no unit {'/'.join(unit)} in the plan")
        parents = {table.copy_of[l] for l in ids}
        if len(parents) != 1:
            raise ValueError(f"{'/'.join(unit)}: languages {ids} are on different copies {sorted(parents)}")
        parent = parents.pop()
        if not ids or len(ids) == len(table.members(parent)):
            raise ValueError(f"{'/'.join(unit)}: splitting {ids} off copy {parent} "
                             f"(members {table.members(parent)}) leaves one side empty")
        new = table.num_copies
        raw = tuple(new if l in ids else c for l, c in enumerate(table.copy_of))
        renumbered = _renumber(raw)

        def one(path, t):
            return CopyTable(renumbered) if unit_of(path_names(path)) == tuple(unit) else t
        return SharingPlan(self.langs, jax.tree_util.tree_map_with_path(
            one, self.tables, is_leaf=lambda x: isinstance(x, CopyTable)))

    def transfer(self, tree: Any, old: "SharingPlan") -> Any:
        """Re-lays out `tree` (stored parameters, or any parameter-shaped tree such as Adam moments) from plan
        `old` to this plan, where every copy of this plan descends from one copy of `old`: a new copy starts
        as a copy of its parent."""
        return jax.tree.map(transfer_leaf, tree, old.tables, self.tables)

    def transfer_opt_state(self, opt_state: Any, old: "SharingPlan", old_params: Any) -> Any:
        """`transfer` applied to every optimizer-state subtree laid out like the parameters (Adam moments,
        accumulated gradients); scalars and other leaves are kept."""
        params_def = jax.tree.structure(old_params)
        shapes = [x.shape for x in jax.tree.leaves(old_params)]

        def like_params(node) -> bool:
            try:
                if jax.tree.structure(node) != params_def:
                    return False
            except Exception:  # noqa: BLE001 - unhashable / custom nodes are not parameter-like
                return False
            return [getattr(x, "shape", None) for x in jax.tree.leaves(node)] == shapes

        return jax.tree.map(lambda n: self.transfer(n, old) if like_params(n) else n, opt_state,
                            is_leaf=like_params)

    # -- serialization --------------------------------------------------------------------------------

    def to_json(self) -> dict:
        """{"langs": [...], "tables": {"decoder/layers_0/fc1/kernel": [0, 1, ...], ...}} (JSON-ready)."""
        return {"langs": list(self.langs),
                "tables": {"/".join(names): list(t.copy_of) for names, t in self.leaves()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], base_params: Any) -> "SharingPlan":
        """The plan `to_json` wrote, laid over the structure of `base_params` (every leaf must be listed)."""
        tables = dict(d["tables"])
        langs = tuple(d["langs"])

        def one(path, _):
            key = "/".join(path_names(path))
            if key not in tables:
                raise ValueError(f"sharing plan has no table for parameter {key}")
            return CopyTable(tuple(int(c) for c in tables.pop(key)))
        plan = cls(langs, jax.tree_util.tree_map_with_path(one, base_params))
        if tables:
            raise ValueError(f"sharing plan names parameters the model does not have: {sorted(tables)[:5]}")
        return plan

    def dumps(self) -> str:
        return json.dumps(self.to_json())

    def __eq__(self, other) -> bool:
        return isinstance(other, SharingPlan) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        split = sum(t.num_copies > 1 for t in self.units().values())
        return f"SharingPlan(langs={self.langs}, units={len(self.units())}, language-specific units={split})"


def transfer_leaf(x, t_old: CopyTable, t_new: CopyTable):
    """Leaf `x` stored under table `t_old` re-laid out for `t_new` (each new copy from its parent copy)."""
    if t_old == t_new:
        return x
    src = []  # parent copy in `t_old` of each new copy
    for c in range(t_new.num_copies):
        parents = {t_old.copy_of[l] for l in t_new.members(c)}
        if len(parents) != 1:
            raise ValueError(f"copy {c} of {t_new.copy_of} merges copies {sorted(parents)} of {t_old.copy_of}")
        src.append(parents.pop())
    base = x[None] if t_old.num_copies == 1 else x
    out = jnp.take(base, jnp.asarray(src, jnp.int32), axis=0)
    return out[0] if t_new.num_copies == 1 else out


def unit_of(names: tuple[str, ...]) -> Unit:
    """The unit (owning module) of a leaf path: the path without its last name."""
    return tuple(names[:-1])


def _stored_shape(shape: tuple[int, ...], t: CopyTable) -> tuple[int, ...]:
    return tuple(shape) if t.num_copies == 1 else (t.num_copies,) + tuple(shape)


def _renumber(copy_of: tuple[int, ...]) -> tuple[int, ...]:
    order: dict[int, int] = {}
    return tuple(order.setdefault(c, len(order)) for c in copy_of)


def base_shapes(params: Any, plan: SharingPlan) -> Any:
    """ShapeDtypeStructs of the base (unshared) parameters of stored parameters `params`."""
    return jax.tree.map(lambda x, t: jax.ShapeDtypeStruct(x.shape if t.num_copies == 1 else x.shape[1:], x.dtype),
                        params, plan.tables)
