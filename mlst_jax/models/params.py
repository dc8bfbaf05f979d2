"""Parameter pytrees (arrays or shapes): the names of a leaf's path, the number of scalars, and the two layouts of a
layer stack (`layers_0..layers_{L-1}`, or one `layers` subtree with leaves stacked on a leading layer axis [L, ...],
what `nn.scan` over the layers makes; see `mlst_jax.models.stack`)."""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["path_names", "count_params", "LAYERS", "stack_layers", "unstack_layers"]

LAYERS = "layers"  # the module name of a scanned layer stack
_LAYER = re.compile(r"layers_(\d+)")


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


def _stack(*xs):
    if isinstance(xs[0], jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(xs),) + tuple(xs[0].shape), xs[0].dtype)
    return jnp.stack(xs) if isinstance(xs[0], jax.Array) else np.stack(xs)


def _index(x, i: int):
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(tuple(x.shape[1:]), x.dtype)
    return x[i]


def stack_layers(tree: Any, like: Any) -> Any:
    """`tree` in the layout of `like` (parameters or shapes of the same model): wherever `like` has a scanned stack
    (a `layers` subtree) and `tree` the layers `layers_0..layers_{L-1}`, these become one `layers` subtree whose
    every leaf stacks the layers' on a leading axis [L, ...]. Everything else is returned as it is."""
    if not isinstance(tree, Mapping) or not isinstance(like, Mapping):
        return tree
    ids = sorted(int(m[1]) for k in tree if (m := _LAYER.fullmatch(k))) if LAYERS in like else []
    if ids != list(range(len(ids))):
        raise ValueError(f"layers {ids} are not numbered 0..{len(ids) - 1}")
    out = {}
    for k, v in tree.items():  # in order, the stack where its first layer was
        if not ids or not _LAYER.fullmatch(k):
            out[k] = stack_layers(v, like[k]) if k in like else v
        elif k == "layers_0":
            out[LAYERS] = jax.tree.map(_stack, *(tree[f"layers_{i}"] for i in ids))
    return out


def unstack_layers(tree: Any) -> Any:
    """`tree` with every scanned stack (a `layers` subtree, leaves [L, ...]) split into `layers_0..layers_{L-1}`:
    the inverse of `stack_layers`, the layout of a model without `scan_layers`."""
    if not isinstance(tree, Mapping):
        return tree
    out = {}
    for k, v in tree.items():
        if k != LAYERS:
            out[k] = unstack_layers(v)
            continue
        for i in range(jax.tree.leaves(v)[0].shape[0]):
            out[f"layers_{i}"] = jax.tree.map(lambda x: _index(x, i), v)
    return out
