"""Parameter pytrees (arrays or shapes): the names of a leaf's path and the number of scalars."""
from __future__ import annotations

import math
from typing import Any

import jax

__all__ = ["path_names", "count_params"]


def path_names(path) -> tuple[str, ...]:
    """('decoder', 'layers_0', 'self_attn', 'q_proj', 'kernel') from a jax key path (dict keys, attribute names and
    sequence indices alike)."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def count_params(params: Any, mask: Any = None) -> int:
    """Number of scalars in the leaves of `params` that `mask` (a pytree of bools of the same structure) marks True;
    all of them when `mask` is None."""
    if mask is None:
        return sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    return sum(jax.tree.leaves(jax.tree.map(lambda x, f: math.prod(x.shape) if f else 0, params, mask)))
