"""Residual bottleneck adapters (Bapna & Firat, 2019) for seed 000's Adapter baseline (Le et al., 2021).

`x + fc2(relu(fc1(LayerNorm(x))))` after every encoder and decoder layer of the S2T Transformer
(`S2TConfig.adapter_dim > 0`). The model holds one adapter per layer; making them per-language is the sharing
plan's job: `mlst_jax.sharing.strategies.adapter_plan` gives every adapter unit one copy per target language (stored `[n, ...]`, gathered
per language group by the train step) and shares everything else. Train them alone with the `adapters` mask
of `mlst_jax.finetune.lna`.

Typical use, from a pretrained multilingual model:

    config = config.replace(adapter_dim=512)
    params = add_adapters(pretrained_params, config, rng)   # identity at initialisation
    plan = adapter_plan(params, langs)                      # 8 languages: 152.1M parameters
    mask = lna.trainable_mask(params, "adapters")
    tx = make_optimizer(cfg, trainable_mask=mask)
    stored = plan.expand(params)

Parameter names: `{encoder,decoder}/layers_i/adapter/{layer_norm,fc1,fc2}`.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from mlst_jax.models import layers
from mlst_jax.models.params import count_params, path_names
from mlst_jax.models.s2t_transformer import abstract_params

ADAPTER = "adapter"
Unit = tuple[str, ...]

__all__ = ["ADAPTER", "adapter_units", "add_adapters", "strip_adapters",
           "has_adapters", "adapter_size", "adapter_model_size"]


def adapter_size(d_model: int, dim: int) -> int:
    """Parameters of one adapter: LayerNorm 2d, fc1 d·dim + dim, fc2 dim·d + d."""
    return 3 * d_model + dim * (2 * d_model + 1)


def adapter_units(params: Any) -> list[Unit]:
    """Units (owning module paths) of the adapter parameters, in pytree order."""
    units = (path_names(p)[:-1] for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
    return list(dict.fromkeys(u for u in units if ADAPTER in u))


def has_adapters(params: Any) -> bool:
    return bool(adapter_units(params))


def add_adapters(params: Any, config, rng: jax.Array) -> dict:
    """`params` of a model without adapters plus freshly initialised (identity) adapters after every encoder
    and decoder layer, as `S2TTransformer(config)` with `config.adapter_dim > 0` lays them out."""
    if config.adapter_dim <= 0:
        raise ValueError(f"add_adapters needs config.adapter_dim > 0, got {config.adapter_dim}")
    if has_adapters(params):
        raise ValueError("add_adapters: the parameters already have adapters")
    module = layers.BottleneckAdapter(config.adapter_dim)
    dummy = jnp.zeros((1, 1, config.d_model), jnp.float32)
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in dict(params).items()}
    for side_index, (side, n) in enumerate((("encoder", config.encoder_layers), ("decoder", config.decoder_layers))):
        for i in range(n):
            name = f"layers_{i}"
            if name not in out.get(side, {}):
                raise ValueError(f"add_adapters: no {side}/{name} in the parameters; do they fit the config?")
            key = jax.random.fold_in(jax.random.fold_in(rng, side_index), i)
            out[side][name] = {**out[side][name], ADAPTER: module.init(key, dummy)["params"]}
    return out


def strip_adapters(params: Any) -> dict:
    """`params` without their adapter subtrees (the plain model's parameters, e.g. for export)."""
    def strip(tree):
        if not isinstance(tree, dict) and not hasattr(tree, "items"):
            return tree
        return {k: strip(v) for k, v in tree.items() if k != ADAPTER}
    return strip(params)


def adapter_model_size(config, langs: Sequence[str], **abstract_kw) -> int:
    """Parameter count of the S2T model `config` (adapter_dim > 0) with per-language adapters for `langs`,
    computed from shapes only: one copy of every adapter per language (`sharing.strategies.adapter_plan`), one of
    everything else."""
    base = abstract_params(config, **abstract_kw)
    adapter = sum(count_params(x) for p, x in jax.tree_util.tree_flatten_with_path(base)[0] if ADAPTER in path_names(p))
    return count_params(base) + (len(langs) - 1) * adapter
