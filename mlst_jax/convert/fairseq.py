"""fairseq `s2t_transformer` checkpoints (`checkpoint*.pt`) ↔ `S2TTransformer` params.

fairseq names are HF names without `model.`, with `subsample` for `conv`, `transformer_layers` for the encoder's
`layers` and `output_projection` for `lm_head`. The architecture comes from the checkpoint's `args`
(argparse.Namespace) or `cfg["model"]`; the vocabulary size from `decoder.embed_tokens.weight`.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any, Mapping

from mlst_jax.convert.hf import (EMBED, LM_HEAD, numpy_to_torch, require_torch, s2t_params_from_state_dict,
                                 s2t_state_dict, torch_to_numpy)
from mlst_jax.convert.names import NameRule
from mlst_jax.models import layers
from mlst_jax.models.s2t_transformer import S2TConfig

FAIRSEQ_RULE = NameRule(
    renames=((r"^encoder\.conv\.", "encoder.subsample."), (r"^encoder\.layers\.", "encoder.transformer_layers."),
             (r"^decoder\.lm_head\.", "decoder.output_projection.")),
    ignore=(r"(^|\.)_float_tensor$", r"(^|\.)version$", r"\.embed_positions\.weights$"))

_ACT_FROM_FAIRSEQ = {"gelu_fast": "gelu_new", "gelu_accurate": "gelu_new"}
_ACT_TO_FAIRSEQ = {"gelu_new": "gelu_accurate", "silu": "swish"}
# Settings of fairseq's S2T Transformer this model does not implement, with the supported value.
_REQUIRED = {"encoder_normalize_before": True, "decoder_normalize_before": True, "layernorm_embedding": False,
             "no_token_positional_embeddings": False, "conv_version": "s2t_transformer"}


def _field(ns: Any, name: str) -> Any:
    """`ns.name` or `ns[name]` (Namespace, dict, omegaconf DictConfig), None when absent."""
    if isinstance(ns, Mapping):
        return ns.get(name)
    try:
        return ns[name]
    except (TypeError, KeyError, AttributeError, IndexError):
        return getattr(ns, name, None)


def _model_args(ckpt: Mapping, source: str) -> Any:
    if _field(ckpt, "args") is not None:
        return ckpt["args"]
    cfg = _field(ckpt, "cfg")
    if cfg is None or _field(cfg, "model") is None:
        raise ValueError(f"{source}: fairseq checkpoint has neither 'args' nor 'cfg[\"model\"]'")
    return _field(cfg, "model")


def config_from_fairseq(args: Any, vocab_size: int, input_dim: int | None = None,
                        source: str = "checkpoint") -> S2TConfig:
    """S2TConfig from fairseq model args; defaults follow fairseq's `s2t_transformer` base architecture."""
    def get(name, default):
        value = _field(args, name)
        return default if value is None else value

    for name, want in _REQUIRED.items():
        if get(name, want) != want:
            raise ValueError(f"{source}: {name}={get(name, want)!r} is not supported (needs {want!r})")
    d = get("encoder_embed_dim", 512)
    if get("decoder_embed_dim", d) != d:
        raise ValueError(f"{source}: encoder_embed_dim={d} != decoder_embed_dim={get('decoder_embed_dim', d)}")
    kernels = get("conv_kernel_sizes", "5,5")
    kernels = tuple(int(k) for k in kernels.split(",")) if isinstance(kernels, str) else tuple(kernels)
    channels = get("input_channels", 1)
    feat = get("input_feat_per_channel", None if input_dim is None else input_dim // channels) or 80
    act = get("activation_fn", "relu")
    act = _ACT_FROM_FAIRSEQ.get(act, act)
    layers.activation(act)
    dropout = get("dropout", 0.1)
    ffn, heads = get("encoder_ffn_embed_dim", 2048), get("encoder_attention_heads", 8)
    return S2TConfig(
        vocab_size=vocab_size, d_model=d, encoder_layers=get("encoder_layers", 12), encoder_ffn_dim=ffn,
        encoder_attention_heads=heads, decoder_layers=get("decoder_layers", 6),
        decoder_ffn_dim=get("decoder_ffn_embed_dim", ffn),
        decoder_attention_heads=get("decoder_attention_heads", heads),
        dropout=dropout, attention_dropout=get("attention_dropout", dropout),
        activation_dropout=get("activation_dropout", dropout), activation_function=act, conv_kernel_sizes=kernels,
        conv_channels=get("conv_channels", 1024), input_feat_per_channel=feat, input_channels=channels,
        max_source_positions=get("max_source_positions", 6000), max_target_positions=get("max_target_positions", 1024),
        scale_embedding=not get("no_scale_embedding", False),
        tie_word_embeddings=bool(get("share_decoder_input_output_embed", False)))


def config_to_fairseq(config: S2TConfig) -> argparse.Namespace:
    """fairseq `args` for `config` (arch s2t_transformer)."""
    c = config
    return argparse.Namespace(
        arch="s2t_transformer", encoder_embed_dim=c.d_model, decoder_embed_dim=c.d_model,
        encoder_ffn_embed_dim=c.encoder_ffn_dim, decoder_ffn_embed_dim=c.decoder_ffn_dim,
        encoder_layers=c.encoder_layers, decoder_layers=c.decoder_layers,
        encoder_attention_heads=c.encoder_attention_heads, decoder_attention_heads=c.decoder_attention_heads,
        conv_kernel_sizes=",".join(map(str, c.conv_kernel_sizes)), conv_channels=c.conv_channels,
        input_feat_per_channel=c.input_feat_per_channel, input_channels=c.input_channels,
        max_source_positions=c.max_source_positions, max_target_positions=c.max_target_positions,
        share_decoder_input_output_embed=c.tie_word_embeddings, dropout=c.dropout,
        attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout,
        activation_fn=_ACT_TO_FAIRSEQ.get(c.activation_function, c.activation_function),
        no_scale_embedding=not c.scale_embedding, encoder_normalize_before=True, decoder_normalize_before=True)


def _torch_load(path: Path, trust_pickle: bool):
    torch = require_torch(f"reading {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_pickle:
            reason = str(e).strip().splitlines()[0]
            raise ValueError(f"{path}: holds Python objects that torch's safe loader refuses ({reason}); "
                             "pass trust_pickle=True to unpickle it fully, only for a file you trust") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def load_fairseq_s2t(path: str | Path, trust_pickle: bool = False) -> tuple[S2TConfig, dict]:
    """(config, params) from a fairseq S2T Transformer checkpoint `.pt`.

    Loads with torch's weights-only unpickler (argparse.Namespace allowed); `trust_pickle=True` allows any
    Python object, as needed for `cfg` stored as an omegaconf DictConfig.
    """
    path = Path(path)
    ckpt = _torch_load(path, trust_pickle)
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        raise ValueError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    torch = require_torch(f"reading {path}")
    state = {k: torch_to_numpy(v) for k, v in ckpt["model"].items() if isinstance(v, torch.Tensor)}
    embed, conv0 = FAIRSEQ_RULE.torch_key(EMBED), FAIRSEQ_RULE.torch_key(("encoder", "conv", "conv_layers_0", "kernel"))
    if embed not in state:
        raise ValueError(f"{path}: checkpoint does not match the model\n  missing keys (1): {embed}")
    input_dim = state[conv0].shape[1] if conv0 in state else None
    config = config_from_fairseq(_model_args(ckpt, str(path)), state[embed].shape[0], input_dim, str(path))
    return config, s2t_params_from_state_dict(state, config, FAIRSEQ_RULE, str(path))


def save_fairseq_s2t(path: str | Path, config: S2TConfig, params: Any) -> Path:
    """Writes a fairseq-style checkpoint {'args': Namespace, 'model': state dict} that `load_fairseq_s2t` reads."""
    torch = require_torch("writing fairseq checkpoints")
    path = Path(path)
    model = {k: numpy_to_torch(v) for k, v in s2t_state_dict(params, config, FAIRSEQ_RULE).items()}
    if config.tie_word_embeddings:
        model[FAIRSEQ_RULE.torch_key(LM_HEAD)] = model[FAIRSEQ_RULE.torch_key(EMBED)]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"args": config_to_fairseq(config), "model": model}, path)
    return path
