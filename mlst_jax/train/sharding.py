"""Device meshes and parameter / batch shardings from one table of logical-axis rules.

Every parameter dimension gets a logical name ("embed", "heads", "mlp", ...) from its path and rank;
`LOGICAL_RULES` maps logical names to mesh axes. The mesh has three axes: "data" (pure data parallelism),
"fsdp" (data parallelism whose parameters and optimizer state are sharded over the "embed" dimension) and
"tensor" (Megatron-style sharding of heads, MLP hidden units, vocabulary and conv channels). The batch is
split over ("data", "fsdp").
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mlst_jax.models.params import LAYERS, path_names

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis (a name, a tuple of names, or None for replicated).
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("conv_out", "tensor"),
    ("conv_in", None),
    ("conv_width", None),
    ("positions", None),
    ("norm", None),
    ("copies", None),
    ("layers", None),
    ("length", None),
)

# Dense kernels [in, out] by module name (fairseq / HF names, shared by S2T, wav2vec 2.0 and mBART).
_DENSE_AXES: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("q_proj", "k_proj", "v_proj", "query", "key", "value"), ("embed", "heads")),
    **dict.fromkeys(("out_proj", "o_proj"), ("heads", "embed")),
    **dict.fromkeys(("fc1", "intermediate_dense"), ("embed", "mlp")),
    **dict.fromkeys(("fc2", "output_dense"), ("mlp", "embed")),
    **dict.fromkeys(("lm_head", "output_projection"), ("embed", "vocab")),
    "projection": ("conv_out", "embed"),  # wav2vec 2.0 feature projection [conv channels, hidden]
    "proj": ("embed", "mlp"),  # XMEF adaptor projection [encoder width, d_model]
}
_EMBED_AXES: dict[str, tuple[str, str]] = {
    "embed_tokens": ("vocab", "embed"),
    "shared": ("vocab", "embed"),
    "embed_positions": ("positions", "embed"),
}
# Parameters that are not in a module of their own, by leaf name.
_LEAF_AXES: dict[str, tuple[str | None, ...]] = {
    "masked_spec_embed": ("embed",),  # wav2vec 2.0's SpecAugment vector [hidden]
    "final_logits_bias": (None, "vocab"),  # mBART [1, vocab]
}
# Conv kernels by module name; other modules named "*conv*" (S2T's `conv_layers_i`) get `_CONV_AXES`. The input
# channels of these take the FSDP axis ("embed"): the model width (adaptor, positional conv) or the extractor's.
_CONV_KERNEL_AXES: dict[str, tuple[str, str, str]] = {
    "conv": ("conv_width", "embed", "conv_out"),  # wav2vec 2.0 feature extractor `conv_layers_i/conv`
    "adaptor": ("conv_width", "embed", "conv_out"),  # XMEF length adaptor `adaptor/layers_i`
    "pos_conv_embed": ("conv_out", "embed", "conv_width"),  # torch layout `weight_v` [C, C/groups, K]
}
_CONV_AXES = ("conv_width", "conv_in", "conv_out")
_KERNEL_NAMES = ("kernel", "weight_v")


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all); the sizes must multiply to their count."""
    devices = list(jax.devices() if devices is None else devices)
    shape = (data, fsdp, tensor)
    if math.prod(shape) != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = {math.prod(shape)} devices, "
                         f"but {len(devices)} devices are available")
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES)


def _expected_axes(names: tuple[str, ...]) -> tuple[str | None, ...] | None:
    """Logical axes of a leaf (without a copies axis) from its path, or None when no rule applies."""
    if names and names[-1] in _LEAF_AXES:
        return _LEAF_AXES[names[-1]]
    if len(names) < 2:
        return None
    module, leaf = names[-2], names[-1]
    if len(names) > 2 and names[-3] == "adaptor" and module.startswith("layers_"):
        module = "adaptor"  # the length adaptor's numbered convs
    if module in _DENSE_AXES:
        axes = _DENSE_AXES[module]
        return axes if leaf in _KERNEL_NAMES else (axes[1],) if leaf == "bias" else None
    if module in _EMBED_AXES and leaf == "embedding":
        return _EMBED_AXES[module]
    if "norm" in module and leaf in ("scale", "bias"):
        return ("norm",)
    if module in _CONV_KERNEL_AXES or "conv" in module:
        kernel = _CONV_KERNEL_AXES.get(module, _CONV_AXES)
        if leaf == "weight_g":  # weight-norm gain, [1, 1, K]
            return ("norm",) * len(kernel)
        return kernel if leaf in _KERNEL_NAMES else ("conv_out",) if leaf == "bias" else None
    return None


def _scanned(names: tuple[str, ...]) -> bool:
    """Whether a leaf belongs to a scanned layer stack: it lies under a module `layers` whose children are the
    layer's modules (a child `0`, `1`, ... is one layer of a list, not a stack)."""
    return LAYERS in names[:-1] and not names[names.index(LAYERS) + 1].isdigit()


def param_logical_axes(params) -> Any:
    """Pytree of logical-axis tuples (one name or None per dimension), matching `params`.

    Rules go by the leaf's module and leaf names (q/k/v kernels [embed, heads], out_proj [heads, embed],
    fc1 [embed, mlp], fc2 [mlp, embed], embed_tokens [vocab, embed], lm_head [embed, vocab], conv kernels
    [width, in, conv_out] with the input channels of wav2vec 2.0's and XMEF's convs on "embed", biases the
    kernel's output axis, norms and weight-norm gains [norm]). A leaf of a scanned layer stack (under a module
    `layers`) leads with the stack's "layers" axis (replicated: every device holds every layer's slice of the
    other axes). A leaf with one more dimension than that expects holds per-language copies: its leading axis is
    "copies" (replicated). Leaves no rule covers are replicated (all None); `sharding_report` lists them.
    """
    def axes(path, x):
        names = path_names(path)
        expected = _expected_axes(names)
        if expected is not None and _scanned(names):
            expected = ("layers",) + tuple(expected)
        if expected is not None and x.ndim == len(expected):
            return tuple(expected)
        if expected is not None and x.ndim == len(expected) + 1:
            return ("copies",) + tuple(expected)
        return (None,) * x.ndim
    return jax.tree_util.tree_map_with_path(axes, params)


def _spec(name: str, shape: tuple[int, ...], axes: tuple[str | None, ...], mesh: Mesh,
          rules: dict, notes: list[str]) -> P:
    used: set[str] = set()
    spec = []
    for dim, (size, logical) in enumerate(zip(shape, axes)):
        if logical is None:
            spec.append(None)
            continue
        if logical not in rules:
            raise ValueError(f"{name}: no rule for logical axis {logical!r}; known: {sorted(rules)}")
        target = rules[logical]
        mesh_axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        missing = [a for a in mesh_axes if a not in mesh.shape]
        if missing:
            raise ValueError(f"logical axis {logical!r} maps to mesh axes {missing} absent from mesh "
                             f"{dict(mesh.shape)}")
        n = math.prod(mesh.shape[a] for a in mesh_axes)
        if not mesh_axes:
            spec.append(None)
        elif size % n or used.intersection(mesh_axes):
            why = f"not divisible by {'x'.join(mesh_axes)}={n}" if size % n else "mesh axis already used"
            notes.append(f"{name}: dim {dim} ({logical}={size}) {why}: replicated")
            spec.append(None)
        else:
            spec.append(target)
            used.update(mesh_axes)
    return P(*spec)


def _plan(params, mesh: Mesh, rules=LOGICAL_RULES) -> tuple[Any, list[str]]:
    rules = dict(rules)
    notes: list[str] = []

    def spec(path, x, axes):
        name = "/".join(path_names(path))
        if x.ndim and all(a is None for a in axes):
            notes.append(f"{name}: no rule for shape {tuple(x.shape)}: replicated")
        return _spec(name, tuple(x.shape), axes, mesh, rules, notes)

    axes = param_logical_axes(params)
    specs = jax.tree_util.tree_map_with_path(spec, params, axes)
    return specs, notes


def param_specs(params, mesh: Mesh) -> Any:
    """Pytree of PartitionSpecs for `params` (arrays or ShapeDtypeStructs) on `mesh`, from `LOGICAL_RULES`.

    A dimension whose size is not divisible by the product of its mesh axes (or whose mesh axis another
    dimension of the same leaf already uses) is replicated instead; see `sharding_report`.
    """
    return _plan(params, mesh)[0]


def param_shardings(params, mesh: Mesh) -> Any:
    """Pytree of NamedShardings for `params` on `mesh`; see `param_specs`. Never raises for odd shapes."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(params, mesh),
                        is_leaf=lambda s: isinstance(s, P))


def sharding_report(params, mesh: Mesh) -> list[str]:
    """One line per replication fallback: non-divisible dimensions and leaves that no rule covers."""
    return _plan(params, mesh)[1]


def batch_sharding(mesh: Mesh, ndim: int = 1, stratified: bool = False) -> NamedSharding:
    """Sharding of a batch array of rank `ndim`: its batch dimension split over ("data", "fsdp").

    Plain batches [B, ...] split B. Language-stratified batches [G, b, ...] split b and keep G (the number of
    languages, rarely a multiple of the device count) whole on every device; the train step flattens them
    b-major ([b, G] -> [b·G]), so each device's rows stay local. Trailing dimensions are replicated, so the
    sharding for the lowest rank also fits every higher-rank leaf of the batch.
    """
    lead = 2 if stratified else 1
    if ndim < lead:
        raise ValueError(f"a {'stratified ' if stratified else ''}batch array needs rank >= {lead}, got {ndim}")
    batch_axes = dict(LOGICAL_RULES)["batch"]
    spec = (None,) * (lead - 1) + (batch_axes,) + (None,) * (ndim - lead)
    return NamedSharding(mesh, P(*spec))


def stratified_batch_shardings(mesh: Mesh, keys) -> dict[str, NamedSharding]:
    """Per-key shardings of a language-stratified batch dict: `group_lang` [G] replicated, the rest split over b."""
    return {k: replicated(mesh) if k == "group_lang" else batch_sharding(mesh, 2, stratified=True) for k in keys}


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, P())
