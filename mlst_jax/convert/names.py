"""One rule-based mapping between flax parameter paths and PyTorch state-dict keys.

A flax path such as `("encoder", "layers_3", "ffn", "fc1", "kernel")` becomes a torch key by
  * turning list-style module names into indices (`layers_3` → `layers.3`, `conv_layers_0` → `conv_layers.0`),
  * dropping wrapper modules that torch does not have (`ffn`),
  * renaming the leaf (`kernel`/`scale`/`embedding` → `weight`; `bias` stays),
  * adding a prefix (`model.`) and applying regex renames on the dotted key (`model.decoder.lm_head.` →
    `lm_head.`).
Kernels are stored transposed: Dense `[in, out]` ↔ `[out, in]`, Conv `[*spatial, in, out]` ↔ `[out, in, *spatial]`.
Loading goes through the same forward rule applied to the expected parameter tree, so it never needs an inverse.
Scanned layer stacks (`layers` with leaves [L, ...], `scan_layers`) are the torch model's `layers.0 .. layers.{L-1}`:
both directions go through the per-layer layout (`mlst_jax.models.params.unstack_layers` / `stack_layers`).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from mlst_jax.models.params import stack_layers, unstack_layers

Path = tuple[str, ...]

_INDEXED = re.compile(r"(.+)_(\d+)")


@dataclasses.dataclass(frozen=True)
class NameRule:
    """How one family of checkpoints names the parameters of a flax model.

    prefix: prepended to every key. renames: (regex, replacement) pairs applied in order to the prefixed key.
    drop: flax module names absent from torch. leaves: flax leaf name → torch leaf name. transposed: leaves whose
    arrays are kernels. ignore: regexes (searched) of torch keys that are buffers, not parameters.
    """

    prefix: str = ""
    renames: tuple[tuple[str, str], ...] = ()
    drop: frozenset[str] = frozenset({"ffn"})
    leaves: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"kernel": "weight", "scale": "weight", "embedding": "weight"})
    transposed: frozenset[str] = frozenset({"kernel"})
    ignore: tuple[str, ...] = ()

    def torch_key(self, path: Path) -> str:
        """Torch state-dict key of the flax parameter at `path`."""
        *modules, leaf = path
        parts = []
        for name in modules:
            if name in self.drop:
                continue
            m = _INDEXED.fullmatch(name)
            parts.append(f"{m[1]}.{m[2]}" if m else name)
        key = self.prefix + ".".join(parts + [self.leaves.get(leaf, leaf)])
        for pattern, repl in self.renames:
            key = re.sub(pattern, repl, key)
        return key

    def _perm(self, path: Path, ndim: int) -> tuple[int, ...] | None:
        if path[-1] not in self.transposed or ndim < 2:
            return None
        return (ndim - 1, ndim - 2) + tuple(range(ndim - 2))

    def to_torch(self, path: Path, x: np.ndarray) -> np.ndarray:
        """Flax array → torch layout."""
        perm = self._perm(path, x.ndim)
        return x if perm is None else np.ascontiguousarray(np.transpose(x, perm))

    def from_torch(self, path: Path, x: np.ndarray) -> np.ndarray:
        """Torch array → flax layout."""
        perm = self._perm(path, x.ndim)
        return x if perm is None else np.ascontiguousarray(np.transpose(x, np.argsort(perm)))

    def torch_shape(self, path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Torch shape of a flax parameter of `shape`."""
        perm = self._perm(path, len(shape))
        return tuple(shape) if perm is None else tuple(shape[p] for p in perm)

    def ignored(self, key: str) -> bool:
        """Whether torch `key` is a buffer to skip."""
        return any(re.search(p, key) for p in self.ignore)


def to_state_dict(params: Any, rule: NameRule) -> dict[str, np.ndarray]:
    """Flax params pytree → {torch key: numpy array in torch layout}."""
    out = {}
    for path, x in traverse_util.flatten_dict(unstack_layers(params)).items():
        key = rule.torch_key(path)
        if key in out:
            raise ValueError(f"two parameters map to the torch key {key!r}")
        out[key] = rule.to_torch(path, np.asarray(x))
    return out


def from_state_dict(state: Mapping[str, np.ndarray], expected: Any, rule: NameRule, source: str,
                    aliases: Mapping[str, str] | None = None) -> dict:
    """Torch state dict → flax params with the structure and shapes of `expected` (arrays or ShapeDtypeStructs).

    `aliases` maps a torch key the model does not own to the key it must equal (tied weights): it is accepted
    when absent or equal. Raises ValueError naming every missing key, unexpected key and shape mismatch.
    """
    aliases = dict(aliases or {})
    flat, missing, mismatched, used = {}, [], [], set()
    for path, leaf in traverse_util.flatten_dict(unstack_layers(expected)).items():
        key = rule.torch_key(path)
        want = rule.torch_shape(path, tuple(leaf.shape))
        if key not in state:
            missing.append(key)
            continue
        used.add(key)
        x = np.asarray(state[key])
        if x.shape != want:
            mismatched.append(f"{key}: checkpoint {x.shape} vs model {want}")
            continue
        flat[path] = rule.from_torch(path, x)
    for key, target in aliases.items():
        if key in state:
            used.add(key)
            if target in state and not np.array_equal(np.asarray(state[key]), np.asarray(state[target])):
                mismatched.append(f"{key}: must equal the tied {target} but differs")
    unexpected = sorted(k for k in state if k not in used and not rule.ignored(k))
    if missing or unexpected or mismatched:
        lines = [f"{source}: checkpoint does not match the model"]
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("mismatches", mismatched)):
            if keys:
                lines.append(f"  {label} ({len(keys)}): " + ", ".join(keys))
        raise ValueError("\n".join(lines))
    return stack_layers(traverse_util.unflatten_dict(flat), expected)
