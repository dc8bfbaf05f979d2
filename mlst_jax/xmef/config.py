"""XMEF experiment configs (`model.family = "xmef"`) and the trained/total parameter report of `mlst params`.

An XMEF config is a `base_config()` with `model.family = "xmef"` and a `model.xmef` block:

| field | meaning |
|---|---|
| `encoder_arch` | named wav2vec 2.0 architecture (`mlst_jax.models.wav2vec2.NAMED_CONFIGS`: base, large_lv60) |
| `encoder` | `Wav2Vec2Config` field overrides |
| `decoder` | `MBartConfig` field overrides (defaults: mBART-50, 12 × 1024, vocabulary 250,054) |
| `adaptor_layers`, `adaptor_kernel_size`, `adaptor_stride`, `adaptor_layer_norm`, `adaptor_proj` | the length adaptor (`XMEFConfig`) |
| `joint_shared_layers` | joint speech-text finetuning: top encoder layers shared with the mBART text encoder (0: off) |

`finetune.trainable` names the LNA variant (`mlst_jax.finetune.lna.VARIANTS["xmef"]`).

Finetuning on a real corpus (`mlst xmef-train`, `mlst_jax.xmef.train`) also reads these `data` fields
(`add_train_fields` adds them with the defaults of `TRAIN_DEFAULTS`; a config without them gets the same defaults):

| field | meaning |
|---|---|
| `batch_size` | utterances per update (random over the training directions, weighted by `data.temperature`) |
| `max_seconds` | training (and dev) utterances longer than this are dropped and counted (`too_long`) |
| `bucket_seconds` | waveforms are padded to a multiple of this (at most `max_seconds`), targets to a power of two >= 16 tokens; 0: always to `max_seconds` and `max_target_tokens` (one compiled shape) |
| `max_target_tokens` | longer target sequences (language code and `</s>` included) are dropped (`too_many_tokens`); at most the decoder's `max_position_embeddings` |
| `eval_directions` | directions scored on `data.test_split` (same syntax as `data.directions`; "": the training directions) |
| `lang_codes` | mBART-50 codes for target languages mBART-50 lacks, e.g. `"ca=es_XX,cy=fr_XX"` ("": none) |
| `loader_threads` | threads loading training audio ahead of the updates |
"""
from __future__ import annotations

import functools
import math

import jax
import ml_collections

FAMILY_S2T, FAMILY_XMEF = "s2t", "xmef"

# Trained-parameter sizes printed in seed 001 (millions, where).
PAPER_TRAINED_M: dict[str, tuple[float, str]] = {
    "all": (793.0, "Finetune All, Tables 1-5"),
    "lna-minimalist": (69.4, "LNA-Minimalist, Table 7; LNA-E,D (LN / LN+EA), Tables 2 and 5"),
    "lna-minimalist-no-ln": (69.3, "-LN, Table 7"),
    "lna-minimalist-no-ea": (19.0, "-EA, Table 7"),
    "lna-minimalist+sa-dec": (119.8, "+SA (decoder), Table 7"),
    "lna-minimalist+sa-enc": (170.2, "+SA (encoder), Table 7"),
    "lna-ed": (170.7, "LNA-E,D (LN+SA / LN+EA), Tables 1-5 (Table 7: 170.2M)"),
    "lna-d": (384.8, "LNA-D, Tables 1-4"),
    "lna-e": (477.6, "LNA-E, Tables 2 and 5"),
}

PAPER_JOINT_M = (1050.0, "Joint Training (1.05B), Tables 3-5")

# Why a printed size differs from ours by more than rounding (docs/finetuning.md has the accounting).
NOTES = {
    "lna-e": "the paper's 477.6M is the decoder + adaptor alone (477,550,592); the encoder LN+SA that Table 2 "
             "says LNA-E trains adds 100,870,144 (docs/finetuning.md)",
    "lna-ed": "Tables 1-5 print 170.7M, Table 7 170.2M for the same rule; the 0.5M gap is about the feature "
              "projection (525,312), which no text says is trained",
    "lna-minimalist-no-ea": "no accounting of the norms reaches 19.0M with the 18.88M adaptor; printed rounded down",
}


def xmef_model_defaults() -> ml_collections.ConfigDict:
    """The `model.xmef` block at the paper's full-size model (wav2vec2-large LV-60, 3-layer adaptor, mBART-50)."""
    m = ml_collections.ConfigDict()
    m.encoder_arch = "large_lv60"
    m.encoder = ml_collections.ConfigDict()
    m.decoder = ml_collections.ConfigDict()
    m.adaptor_layers = 3
    m.adaptor_kernel_size = 3
    m.adaptor_stride = 2
    m.adaptor_layer_norm = False
    m.adaptor_proj = False
    m.joint_shared_layers = 0
    return m


TRAIN_DEFAULTS: dict[str, object] = {
    "batch_size": 8,
    "max_seconds": 30.0,
    "bucket_seconds": 4.0,
    "max_target_tokens": 256,
    "eval_directions": "",
    "lang_codes": "",
    "loader_threads": 4,
}


def add_train_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the `data` fields of `mlst xmef-train` (`TRAIN_DEFAULTS`) that `c` lacks; returns `c`."""
    for name, value in TRAIN_DEFAULTS.items():
        if name not in c.data:
            c.data[name] = value
    return c


def train_setting(c: ml_collections.ConfigDict, name: str):
    """`c.data.<name>` of an XMEF training field, or its `TRAIN_DEFAULTS` value when the config has none."""
    return c.data.get(name, TRAIN_DEFAULTS[name])


def family(c: ml_collections.ConfigDict) -> str:
    """`model.family` ("s2t" when the config has none)."""
    fam = c.model.get("family", FAMILY_S2T)
    if fam not in (FAMILY_S2T, FAMILY_XMEF):
        raise ValueError(f"model.family={fam!r} is not one of {FAMILY_S2T!r}, {FAMILY_XMEF!r}")
    return fam


def model_config(c: ml_collections.ConfigDict):
    """The `XMEFConfig` of an XMEF experiment config."""
    from mlst_jax.models import wav2vec2
    from mlst_jax.models.mbart import MBartConfig
    from mlst_jax.models.xmef import XMEFConfig

    if "xmef" not in c.model:
        raise ValueError("model.xmef is missing: an XMEF config needs the block of "
                         "mlst_jax.xmef.config.xmef_model_defaults()")
    m = c.model.xmef
    try:
        encoder = wav2vec2.named_config(m.encoder_arch, **m.encoder.to_dict())
        decoder = MBartConfig(**m.decoder.to_dict())
    except TypeError as e:
        raise ValueError(f"model.xmef.encoder / model.xmef.decoder: {e}") from None
    return XMEFConfig(encoder=encoder, decoder=decoder, adaptor_layers=m.adaptor_layers,
                      adaptor_kernel_size=m.adaptor_kernel_size, adaptor_stride=m.adaptor_stride,
                      adaptor_layer_norm=m.adaptor_layer_norm, adaptor_proj=m.adaptor_proj)


@functools.lru_cache(maxsize=4)
def _abstract_params(config, joint_shared_layers: int = 0):
    if joint_shared_layers:
        from mlst_jax.xmef.joint import JointConfig, abstract_params

        return abstract_params(JointConfig(config, joint_shared_layers))
    from mlst_jax.models.xmef import abstract_params

    return abstract_params(config)


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def finetune_report(c: ml_collections.ConfigDict, variant: str | None = None) -> dict:
    """Trained and total parameters of a finetuning variant (default `finetune.trainable`), from shapes only.

    XMEF configs count the XMEF model (the joint speech-text model when `model.xmef.joint_shared_layers` > 0); S2T
    configs the shared S2T model (no sharing plan). For XMEF, `paper_params`
    and `paper_table` give seed 001's printed size when it has one, `note` explains a disagreement.
    """
    from mlst_jax.finetune import lna
    from mlst_jax.train.optim import count_trainable

    variant = variant or c.finetune.get("trainable", "all")
    fam = family(c)
    joint = c.model.xmef.get("joint_shared_layers", 0) if fam == FAMILY_XMEF else 0
    if fam == FAMILY_XMEF:
        params = _abstract_params(model_config(c), joint)
    else:
        from mlst_jax.models.s2t_transformer import abstract_params
        from mlst_jax.train import config as cfglib

        params = abstract_params(cfglib.model_config(c))
    mask = lna.trainable_mask(params, variant, model=fam)
    total, trained = count_trainable(params), count_trainable(params, mask)
    sides: dict[str, dict[str, int]] = {}
    flat_mask = jax.tree.leaves(mask)
    for (path, x), flag in zip(jax.tree_util.tree_flatten_with_path(params)[0], flat_mask):
        entry = sides.setdefault(lna.side_of(_names(path), fam), {"trained": 0, "total": 0})
        entry["total"] += math.prod(x.shape)
        entry["trained"] += math.prod(x.shape) if flag else 0
    report = {"family": fam, "joint_shared_layers": joint, "variant": variant, "trained_params": trained, "total_params": total,
              "fraction": trained / total, "sides": sides}
    paper = (PAPER_JOINT_M if variant == "all" else None) if joint else PAPER_TRAINED_M.get(variant)
    if fam == FAMILY_XMEF and paper:
        paper, where = paper
        report.update(paper_params=paper * 1e6, paper_table=where,
                      relative_difference=trained / (paper * 1e6) - 1.0)
        if variant in NOTES and not joint:
            report["note"] = NOTES[variant]
    return report


def format_report(r: dict) -> str:
    """Human-readable lines of a `finetune_report`."""
    lines = [f"{r['family']} finetuning variant {r['variant']}: {r['trained_params']:,} of {r['total_params']:,} "
             f"parameters trained ({r['trained_params'] / 1e6:.2f}M of {r['total_params'] / 1e6:.2f}M, "
             f"{100 * r['fraction']:.1f}%)"]
    for side, n in r["sides"].items():
        lines.append(f"  {side:<8} {n['trained']:>14,} of {n['total']:>14,}")
    if "paper_params" in r:
        lines.append(f"seed 001: {r['paper_params'] / 1e6:.1f}M ({r['paper_table']}); ours differs by "
                     f"{100 * r['relative_difference']:+.2f}%")
    if "note" in r:
        lines.append(f"note: {r['note']}")
    return "\n".join(lines)
