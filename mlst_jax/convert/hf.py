"""HF `Speech2TextForConditionalGeneration` checkpoints ↔ `S2TTransformer` params.

Reads and writes `config.json` + `model.safetensors` without torch; `pytorch_model.bin` needs torch.
Loaded params are a nested dict of numpy arrays in the checkpoint's dtype.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file, save_file

from mlst_jax.convert.names import NameRule, from_state_dict, to_state_dict
from mlst_jax.models.s2t_transformer import S2TConfig, abstract_params

HF_RULE = NameRule(prefix="model.", renames=((r"^model\.decoder\.lm_head\.", "lm_head."),),
                   ignore=(r"\.embed_positions\.weights$",))

LM_HEAD = ("decoder", "lm_head", "kernel")
EMBED = ("decoder", "embed_tokens", "embedding")

# `Speech2TextConfig` defaults that differ from `S2TConfig`'s, for config.json files that omit them.
_HF_DEFAULTS = {"attention_dropout": 0.0, "activation_dropout": 0.0, "tie_word_embeddings": True}


def require_torch(what: str):
    """Imports torch, or raises ImportError saying that `what` needs it."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs PyTorch (pip install torch); safetensors checkpoints do not") from None
    return torch


def torch_to_numpy(t) -> np.ndarray:
    """CPU numpy copy of a torch tensor, bfloat16 included."""
    import torch
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def numpy_to_torch(x: np.ndarray):
    """Torch tensor of a numpy array, bfloat16 included."""
    import torch
    x = np.ascontiguousarray(x)
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(x)


def refuse_adapters(config: S2TConfig, what: str) -> None:
    """ValueError when `config` has bottleneck adapters, which HF Speech2Text and fairseq S2T checkpoints lack."""
    if config.adapter_dim:
        raise ValueError(f"{what}: the model has bottleneck adapters (adapter_dim={config.adapter_dim}), which "
                         "Speech2Text / fairseq S2T checkpoints cannot hold; convert the base model "
                         "(mlst_jax.finetune.adapters.strip_adapters(params), config.replace(adapter_dim=0)), "
                         "or keep an Orbax checkpoint")


def s2t_params_from_state_dict(state: dict[str, np.ndarray], config: S2TConfig, rule: NameRule,
                               source: str) -> dict:
    """S2TTransformer params from a torch-layout state dict named by `rule`; ValueError on any mismatch."""
    refuse_adapters(config, source)
    aliases = {rule.torch_key(LM_HEAD): rule.torch_key(EMBED)} if config.tie_word_embeddings else {}
    return from_state_dict(state, abstract_params(config), rule, source, aliases)


def s2t_state_dict(params: Any, config: S2TConfig, rule: NameRule) -> dict[str, np.ndarray]:
    """Torch-layout state dict of `params`, after checking that they fit `config`; the training-only CTC layer
    (`ctc_proj`) is left out."""
    refuse_adapters(config, "params to export")
    if config.ctc_vocab_size:
        params, config = {k: v for k, v in params.items() if k != "ctc_proj"}, config.replace(ctc_vocab_size=0)
    state = to_state_dict(params, rule)
    s2t_params_from_state_dict(state, config, rule, "params to export")
    return state


def config_from_hf(d: dict[str, Any], source: str = "config.json") -> S2TConfig:
    """S2TConfig from an HF `Speech2TextConfig` dict (`dtype` there is the storage dtype and is not used)."""
    if d.get("model_type") != "speech_to_text":
        raise ValueError(f"{source}: model_type is {d.get('model_type')!r}, expected 'speech_to_text'")
    d = {**_HF_DEFAULTS, **d}
    d.pop("dtype", None)
    return S2TConfig.from_dict(d)


def config_to_hf(config: S2TConfig, storage_dtype: str = "float32") -> dict[str, Any]:
    """HF `Speech2TextConfig` dict of `config`."""
    refuse_adapters(config, "config to export")
    d = config.to_dict()
    d.pop("dtype")
    del d["remat"], d["scan_layers"]  # run-time options, not the model's
    d.pop("adapter_dim")
    d.pop("ctc_vocab_size")  # the training-only CTC layer is not exported
    return {"model_type": "speech_to_text", "architectures": ["Speech2TextForConditionalGeneration"],
            "is_encoder_decoder": True, "num_conv_layers": config.num_conv_layers, "dtype": storage_dtype, **d}


def _read_state(path: Path) -> tuple[dict[str, np.ndarray], Path]:
    if (f := path / "model.safetensors").exists():
        return load_file(f), f
    if (f := path / "model.safetensors.index.json").exists():
        shards = sorted(set(json.loads(f.read_text())["weight_map"].values()))
        return {k: v for s in shards for k, v in load_file(path / s).items()}, f
    if (f := path / "pytorch_model.bin").exists():
        torch = require_torch(f"reading {f}")
        state = torch.load(f, map_location="cpu", weights_only=True)
        return {k: torch_to_numpy(v) for k, v in state.items()}, f
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_hf_speech2text(path: str | Path) -> tuple[S2TConfig, dict]:
    """(config, params) from an HF Speech2Text directory (config.json + safetensors or pytorch_model.bin)."""
    path = Path(path)
    config = config_from_hf(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    state, source = _read_state(path)
    return config, s2t_params_from_state_dict(state, config, HF_RULE, str(source))


def save_hf_speech2text(path: str | Path, config: S2TConfig, params: Any) -> Path:
    """Writes `config.json` + `model.safetensors` loadable by `Speech2TextForConditionalGeneration`."""
    path = Path(path)
    state = s2t_state_dict(params, config, HF_RULE)
    dtypes = {str(x.dtype) for x in state.values()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    hf = config_to_hf(config, dtypes.pop() if len(dtypes) == 1 else "float32")
    (path / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    return path
