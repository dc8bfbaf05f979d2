"""The repeated layers of an encoder or decoder, applied one by one or with `nn.scan` (`scan_layers`).

Unscanned, a stack is the modules `layers_0..layers_{n-1}`, each traced and compiled on its own. Scanned, it is one
module `layers` run by `nn.scan`: its parameters are stacked on a leading layer axis [n, ...], the layer is traced
once, so compile time no longer grows with depth. `nn.scan` splits the 'params' and 'dropout' RNGs per layer, so
every layer gets its own initialization and dropout masks; a layer's own remat (`layers.rematerializable`) then
runs inside the scan. `mlst_jax.models.params.stack_layers` / `unstack_layers` convert between the two layouts.

Without remat a scanned layer keeps only its matmul outputs for the backward pass and recomputes the elementwise
rest (`jax.checkpoint_policies.dots_saveable`). The scan must store every residual it keeps, stacked per layer,
where the per-layer model lets XLA fuse the cheap ones into the backward pass: keeping all of them doubled the peak
memory of XMEF's full-size train step (docs/benchmarks.md).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlst_jax.models import layers

Stack = Any  # a list of layer modules, or one module scanned over the layers


def layer_stack(make: Callable[[str], nn.Module], n: int, scan: bool) -> Stack:
    """The n layers of a stack: `[make("layers_0"), ...]`, or with `scan` the one module `make("layers")`."""
    return make("layers") if scan else [make(f"layers_{i}") for i in range(n)]


def is_scanned(stack: Stack) -> bool:
    return not isinstance(stack, Sequence)


def apply_layers(stack: Stack, n: int, body: Callable[[nn.Module, Any], Any], x: Any, layerdrop: float = 0.0,
                 deterministic: bool = True, owner: nn.Module | None = None) -> Any:
    """`x = body(layer, x)` for every layer of `stack` (from `layer_stack`) in order; scanned, `body` is traced once
    and every RNG it draws from `layer` differs per layer.

    LayerDrop: with `layerdrop` > 0 in training, each layer's output is discarded with that probability. Under jit
    a skipped layer is still computed: LayerDrop regularizes, it does not save time here; selecting keeps shapes
    static and the gradients of skipped layers zero. The draw comes from `owner` (the module holding the stack)
    unscanned, from the layer scanned (the owner's RNG would repeat in every step of the scan).
    """
    def step(layer, x):
        y = body(layer, x)
        skip = layers.layer_dropped(layer if is_scanned(stack) else owner, layerdrop, deterministic)
        return y if skip is None else jnp.where(skip, x, y)

    if not is_scanned(stack):
        for layer in stack:
            x = step(layer, x)
        return x
    scanned = lambda layer, carry, _: (step(layer, carry), None)
    if not stack.config.remat:  # with remat the layer keeps nothing but its input (`layers.rematerializable`)
        scanned = nn.remat(scanned, policy=jax.checkpoint_policies.dots_saveable, prevent_cse=False)
    scan = nn.scan(scanned, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True}, length=n)
    return scan(stack, x, None)[0]


def per_layer_only(stack: Stack, what: str) -> None:
    """ValueError for `what` on a scanned stack (KV-cache decoding runs on per-layer parameters)."""
    if is_scanned(stack):
        raise ValueError(f"{what} needs the per-layer model: build it with scan_layers=False and "
                         "mlst_jax.models.params.unstack_layers(params) (the Translator does both)")
