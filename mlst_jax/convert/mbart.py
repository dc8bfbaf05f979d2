"""HF `MBartForConditionalGeneration` directories ↔ `MBart` params.

Our names are HF's without `model.`, with `lm_head` / `final_logits_bias` under `decoder`. With tied embeddings
the encoder's and decoder's `embed_tokens.weight` and `lm_head.weight` are aliases of `model.shared.weight`
(accepted when absent, or present and equal). An all-zero `final_logits_bias` (every released mBART) is dropped; a
non-zero one turns on `add_final_logits_bias`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mlst_jax.convert.hf import _read_state
from mlst_jax.convert.names import NameRule, from_state_dict, to_state_dict
from mlst_jax.models.mbart import MBartConfig, abstract_params

HF_RULE = NameRule(prefix="model.", renames=((r"^model\.decoder\.lm_head\.", "lm_head."),
                                             (r"^model\.decoder\.final_logits_bias$", "final_logits_bias")))
FINAL_LOGITS_BIAS = "final_logits_bias"

# HF `MBartConfig` defaults that differ from `MBartConfig`'s, for config.json files that omit them.
_HF_DEFAULTS = {"vocab_size": 50265, "scale_embedding": False}


def config_from_hf(d: dict[str, Any], source: str = "config.json") -> MBartConfig:
    """MBartConfig from an HF `MBartConfig` dict (`dtype` there is the storage dtype and is not used)."""
    if d.get("model_type") != "mbart":
        raise ValueError(f"{source}: model_type is {d.get('model_type')!r}, expected 'mbart'")
    d = {**_HF_DEFAULTS, **d}
    d.pop("dtype", None)
    if d.get("decoder_start_token_id") is None:
        d["decoder_start_token_id"] = d.get("eos_token_id", 2)
    if d.get("tie_word_embeddings") is None:
        d["tie_word_embeddings"] = True
    return MBartConfig.from_dict(d)


def config_to_hf(config: MBartConfig, storage_dtype: str = "float32") -> dict[str, Any]:
    """HF `MBartConfig` dict of `config`."""
    d = config.to_dict()
    d.pop("dtype")
    del d["remat"], d["scan_layers"]  # run-time options, not the model's
    d.pop("add_final_logits_bias")
    return {"model_type": "mbart", "architectures": ["MBartForConditionalGeneration"], "is_encoder_decoder": True,
            "dtype": storage_dtype, **d}


def with_final_logits_bias(config: MBartConfig, state: Mapping[str, np.ndarray], key: str) -> MBartConfig:
    """`config` with `add_final_logits_bias` on iff the checkpoint's `key` holds a non-zero bias."""
    bias = state.get(key)
    return config.replace(add_final_logits_bias=bias is not None and bool(np.any(np.asarray(bias) != 0)))


SHARED = "model.shared.weight"
ENC_EMBED, DEC_EMBED = "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"


def params_from_state_dict(state: Mapping[str, np.ndarray], config: MBartConfig, source: str) -> dict:
    """`MBart` params from an HF-named state dict; ValueError naming every missing, unexpected or mismatched key.

    Untied models take their encoder / decoder embeddings from `embed_tokens` (falling back to `model.shared`
    for files that store only that) and ignore `model.shared`, which transformers v5 does not use then.
    """
    state = dict(state)
    if config.tie_word_embeddings:
        aliases = {ENC_EMBED: SHARED, DEC_EMBED: SHARED, "lm_head.weight": SHARED}
    else:
        aliases = {}
        for key in (ENC_EMBED, DEC_EMBED):
            if key not in state and SHARED in state:
                state[key] = state[SHARED]
        state.pop(SHARED, None)
    if not config.add_final_logits_bias:
        state.pop(FINAL_LOGITS_BIAS, None)
    return from_state_dict(state, abstract_params(config), HF_RULE, source, aliases)


def load_hf_mbart(path: str | Path) -> tuple[MBartConfig, dict]:
    """(config, params) from an HF MBart directory (config.json + safetensors or pytorch_model.bin)."""
    path = Path(path)
    config = config_from_hf(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    state, source = _read_state(path)
    config = with_final_logits_bias(config, state, FINAL_LOGITS_BIAS)
    return config, params_from_state_dict(state, config, str(source))


def save_hf_mbart(path: str | Path, config: MBartConfig, params: Any) -> Path:
    """Writes `config.json` + `model.safetensors` loadable by `MBartForConditionalGeneration`."""
    from safetensors.numpy import save_file

    path = Path(path)
    state = to_state_dict(params, HF_RULE)
    params_from_state_dict(state, config, "params to export")
    if not config.tie_word_embeddings:
        state[SHARED] = state[ENC_EMBED]
    if not config.add_final_logits_bias:
        state[FINAL_LOGITS_BIAS] = np.zeros((1, config.vocab_size), np.float32)
    dtypes = {str(x.dtype) for x in state.values()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    hf = config_to_hf(config, dtypes.pop() if len(dtypes) == 1 else "float32")
    (path / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    return path
