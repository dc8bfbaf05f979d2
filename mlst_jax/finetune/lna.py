"""Trainable-parameter masks: which leaves a finetuning variant trains (LNA of seed 001, the baselines of seed 000).

`trainable_mask(params, variant)` returns a pytree of Python bools shaped like `params` (plain or stored under
a SharingPlan, arrays or shapes); `make_optimizer(cfg, trainable_mask=mask)` gives frozen leaves zero updates
and no optimizer state.

Every leaf is classified by its path into a *side* and a *part*:

- side: S2T Transformer: `encoder` or `decoder` (the first name). XMEF: `adaptor` (a path through
  `adapter`/`adaptor`), `decoder` (a path through `decoder`, or the top-level `shared`, `lm_head`,
  `final_logits_bias`), otherwise `encoder` (wav2vec 2.0: `feature_extractor`, `feature_projection`,
  `masked_spec_embed`, `encoder/...`).
- part: `ln`: the owning module is a norm (`layer_norm`, `*_layer_norm`, `layernorm_embedding`; this includes
  wav2vec 2.0's feature-extractor norms); `sa`: under a module `self_attn` (or HF wav2vec 2.0's `attention`);
  `ea`: under `encoder_attn`; `adapter`: under a bottleneck `adapter` (S2T only); else `other`.

A variant trains, per side, either everything (`all`) or the listed parts; the XMEF length adaptor is trained
by every variant but `none`; S2T bottleneck adapters are trained by `adapters` and by a side marked `all`.

XMEF variants (seed 001; counts at wav2vec2-large LV-60 + adaptor + mBART-50 decoder, total 792,989,312):

| variant                 | encoder | decoder   | paper name (table)                  | paper    | ours        |
|-------------------------|---------|-----------|-------------------------------------|----------|-------------|
| `all`                   | all     | all       | Finetune All (T1–5)                 | 793.0M   | 792,989,312 |
| `lna-minimalist`        | LN      | LN+EA     | LNA-Minimalist (T7), LNA-E,D (T2,5) | 69.4M    | 69,447,680  |
| `lna-minimalist-no-ln`  | –       | EA        | −LN (T7)                            | 69.3M    | 69,261,312  |
| `lna-minimalist-no-ea`  | LN      | LN        | −EA (T7)                            | 19.0M    | 19,066,880  |
| `lna-minimalist+sa-dec` | LN      | LN+SA+EA  | +SA in the decoder (T7)             | 119.8M   | 119,828,480 |
| `lna-minimalist+sa-enc` | LN+SA   | LN+EA     | +SA in the encoder (T7)             | 170.2M   | 170,209,280 |
| `lna-ed` (same rule)    | LN+SA   | LN+EA     | LNA-E,D (T1–5)                      | 170.7M   | 170,209,280 |
| `lna-d`                 | all     | LN+EA     | LNA-D (T1–4, T6)                    | 384.8M   | 384,777,856 |
| `lna-e`                 | LN+SA   | all       | LNA-E (T2, T5)                      | 477.6M   | 578,420,736 |
| `none`                  | –       | –         |                                     |          | 0           |

(The adaptor, 18,880,512, is in every row but `none`.) Paper sizes our rules do not reproduce: −EA rounds
to 19.1M under every accounting of the LayerNorms; LNA-E's 477.6M is the decoder + adaptor alone
(477,550,592), without the encoder LN+SA that Table 2 says LNA-E trains; LNA-E,D's 170.7M (Tables 1–5) is
Table 7's 170.2M plus 0.5M, about the feature projection (525,312), which no text says is trained.
docs/finetuning.md has the accounting.

S2T Transformer variants (seed 000 Table 1 baselines, from seed 001's definitions; counts at
s2t_transformer_m, vocabulary 10k untied, total 76,327,936):

| variant    | encoder | decoder | trained    |
|------------|---------|---------|------------|
| `all`      | all     | all     | 76,327,936 |
| `lna-e`    | LN+SA   | all     | 48,098,304 |
| `lna-d`    | all     | LN+EA   | 47,185,920 |
| `lna-ed`   | LN+SA   | LN+EA   | 18,956,288 |
| `adapters` | adapters | adapters | 9,474,048 (adapter_dim=512; × copies under `adapter_plan`) |
| `none`     | –       | –       | 0          |

Every rule checks what it relies on: a requested part that matches no leaf on its side (say `ea` in a tree
without `encoder_attn`), a side without leaves, a missing adaptor or missing adapters raise ValueError.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import jax

from mlst_jax.models.params import count_params, path_names

S2T, XMEF = "s2t", "xmef"
LN, SA, EA = "ln", "sa", "ea"
ALL = "all"
ENCODER, DECODER, ADAPTOR = "encoder", "decoder", "adaptor"
ADAPTER = "adapter"  # S2T bottleneck adapters (mlst_jax.finetune.adapters)

_SA_MODULES = frozenset({"self_attn", "attention"})
_EA_MODULES = frozenset({"encoder_attn"})
_ADAPTOR_MODULES = frozenset({"adapter", "adaptor"})
_XMEF_DECODER_TOP = frozenset({"shared", "lm_head", "final_logits_bias"})
_XMEF_MARKERS = frozenset({"feature_extractor", "feature_projection"})

Spec = Any  # "all" or a frozenset of parts


@dataclasses.dataclass(frozen=True)
class Variant:
    """What a finetuning variant trains: per side `"all"` or a set of parts (`ln`, `sa`, `ea`); `adaptor`: the
    XMEF length adaptor; `adapters`: the S2T bottleneck adapters."""

    encoder: Spec
    decoder: Spec
    adaptor: bool = True
    adapters: bool = False

    def __post_init__(self):
        for side in (ENCODER, DECODER):
            spec = getattr(self, side)
            if spec != ALL:
                spec = frozenset(spec)
                if not spec <= {LN, SA, EA}:
                    raise ValueError(f"{side} parts {sorted(spec)}: known parts are ln, sa, ea (or 'all')")
                object.__setattr__(self, side, spec)

    @property
    def trains_nothing(self) -> bool:
        return not (self.encoder or self.decoder or self.adaptor or self.adapters)


_NONE = frozenset()
VARIANTS: dict[str, dict[str, Variant]] = {
    S2T: {
        "all": Variant(ALL, ALL, adaptor=False),
        "lna-e": Variant({LN, SA}, ALL, adaptor=False),
        "lna-d": Variant(ALL, {LN, EA}, adaptor=False),
        "lna-ed": Variant({LN, SA}, {LN, EA}, adaptor=False),
        "adapters": Variant(_NONE, _NONE, adaptor=False, adapters=True),
        "none": Variant(_NONE, _NONE, adaptor=False),
    },
    XMEF: {
        "all": Variant(ALL, ALL),
        "lna-e": Variant({LN, SA}, ALL),
        "lna-d": Variant(ALL, {LN, EA}),
        "lna-ed": Variant({LN, SA}, {LN, EA}),
        "lna-minimalist": Variant({LN}, {LN, EA}),
        "lna-minimalist-no-ln": Variant(_NONE, {EA}),
        "lna-minimalist-no-ea": Variant({LN}, {LN}),
        "lna-minimalist+sa-dec": Variant({LN}, {LN, SA, EA}),
        "lna-minimalist+sa-enc": Variant({LN, SA}, {LN, EA}),
        "none": Variant(_NONE, _NONE, adaptor=False),
    },
}


def _leaves(params: Any) -> list[tuple[tuple[str, ...], Any]]:
    return [(path_names(p), x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]]


def _is_norm(module: str) -> bool:
    return module == "layer_norm" or module.endswith("_layer_norm") or "layernorm" in module


def detect_model(params: Any) -> str:
    """'xmef' for a tree with wav2vec 2.0 parts, 's2t' for one with the S2T conv subsampler."""
    names = [n for n, _ in _leaves(params)]
    if any(_XMEF_MARKERS & set(n) for n in names):
        return XMEF
    if any(n[:2] == (ENCODER, "conv") for n in names):
        return S2T
    raise ValueError("cannot tell the model from the parameter names (no wav2vec 2.0 feature_extractor / "
                     "feature_projection, no S2T encoder/conv); pass model='s2t' or model='xmef'")


def side_of(names: tuple[str, ...], model: str) -> str:
    modules = names[:-1]
    if model == S2T:
        if names[0] not in (ENCODER, DECODER):
            raise ValueError(f"{'/'.join(names)}: S2T parameters live under encoder/ or decoder/")
        return names[0]
    if _ADAPTOR_MODULES & set(modules):
        return ADAPTOR
    if DECODER in modules or names[0] in _XMEF_DECODER_TOP:
        return DECODER
    return ENCODER


def part_of(names: tuple[str, ...], model: str) -> str:
    modules = names[:-1]
    if model == S2T and ADAPTER in modules:
        return ADAPTER
    if modules and _is_norm(modules[-1]):
        return LN
    if _SA_MODULES & set(modules):
        return SA
    if _EA_MODULES & set(modules):
        return EA
    return "other"


def _resolve(variant: str | Variant, model: str) -> tuple[str, Variant]:
    if isinstance(variant, Variant):
        return "custom variant", variant
    table = VARIANTS[model]
    if variant not in table:
        raise ValueError(f"unknown {model} finetuning variant {variant!r}; known: {', '.join(table)}")
    return variant, table[variant]


def _check(label: str, variant: Variant, classes: list[tuple[tuple[str, ...], str, str]], model: str):
    """Raises ValueError when a component the variant relies on matches no parameter."""
    def examples(side):
        return ", ".join("/".join(n) for n, s, _ in classes if s == side)[:300] or "none"

    for side in (ENCODER, DECODER):
        if not any(s == side for _, s, _ in classes):
            raise ValueError(f"{label}: no {side} parameters found (model={model})")
        spec = getattr(variant, side)
        if spec == ALL:
            continue
        for part in sorted(spec):
            if not any(s == side and p == part for _, s, p in classes):
                raise ValueError(f"{label}: the {side} part {part!r} matches no parameter; {side} parameters: "
                                 f"{examples(side)}")
    if model == XMEF and variant.adaptor and not any(s == ADAPTOR for _, s, _ in classes):
        raise ValueError(f"{label}: no length-adaptor parameters (a path through 'adapter' or 'adaptor')")
    if variant.adapters and not any(p == ADAPTER for _, _, p in classes):
        raise ValueError(f"{label}: the model has no bottleneck adapters (build it with adapter_dim > 0)")


def trainable_mask(params: Any, variant: str | Variant, model: str | None = None) -> Any:
    """Pytree of bools like `params`: True where `variant` trains the leaf. `model`: 's2t' or 'xmef'
    (detected from the names when None). See the module docstring for the rules."""
    model = model or detect_model(params)
    if model not in VARIANTS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(VARIANTS)}")
    label, v = _resolve(variant, model)
    label = f"finetuning variant {label} ({model})"
    leaves = _leaves(params)
    classes = [(n, side_of(n, model), part_of(n, model)) for n, _ in leaves]
    _check(label, v, classes, model)

    def trained(side: str, part: str) -> bool:
        if side == ADAPTOR:
            return v.adaptor
        spec = getattr(v, side)
        if part == ADAPTER:
            return v.adapters or spec == ALL
        return spec == ALL or part in spec

    flags = [trained(s, p) for _, s, p in classes]
    if not any(flags) and not v.trains_nothing:
        raise ValueError(f"{label} selects no parameter")
    return jax.tree_util.tree_unflatten(jax.tree.structure(params), flags)


def trainable_counts(params: Any, variants: Iterable[str] | None = None, model: str | None = None) -> dict[str, int]:
    """{variant: number of trained scalars} for `variants` (default: every variant of the model that applies to
    `params`; `adapters` only when the model has adapters). Works on shapes (jax.eval_shape output)."""
    model = model or detect_model(params)
    if variants is None:
        has_adapters = any(part_of(n, model) == ADAPTER for n, _ in _leaves(params))
        variants = [v for v in VARIANTS[model] if v != "adapters" or has_adapters]
    return {v: count_params(params, trainable_mask(params, v, model)) for v in variants}
