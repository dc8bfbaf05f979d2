"""wav2vec 2.0 checkpoints ↔ `Wav2Vec2` params: HF `Wav2Vec2Model` / `Wav2Vec2ForCTC` directories and fairseq
`wav2vec2` checkpoints (pretrained, or CTC-finetuned `w2v_encoder.w2v_model.*`).

Key mapping (ours → HF → fairseq; dotted flax paths, `i` a layer index):
  feature_extractor.conv_layers.i.conv → same → feature_extractor.conv_layers.i.0
  feature_extractor.conv_layers.i.layer_norm → same → feature_extractor.conv_layers.0.2 (group norm, layer 0 only)
      or feature_extractor.conv_layers.i.2.1 (layer norm)
  feature_projection.layer_norm / .projection → same → layer_norm / post_extract_proj
  masked_spec_embed → same → mask_emb
  encoder.pos_conv_embed.{weight_g, weight_v, bias} → encoder.pos_conv_embed.conv.{parametrizations.weight.original0,
      parametrizations.weight.original1, bias} → encoder.pos_conv.0.{weight_g, weight_v, bias}
  encoder.layers.i.self_attn.{q,k,v,out}_proj → encoder.layers.i.attention.* → same as ours
  encoder.layers.i.self_attn_layer_norm → encoder.layers.i.layer_norm → same as ours
  encoder.layers.i.fc1 / fc2 → encoder.layers.i.feed_forward.intermediate_dense / output_dense → same as ours
  encoder.layers.i.final_layer_norm, encoder.layer_norm → same → same
  lm_head (CTC) → lm_head, the rest under `wav2vec2.` → w2v_encoder.proj, the rest under `w2v_encoder.w2v_model.`

Legacy weight-norm names (`weight_g`/`weight_v`) are accepted in HF files and `parametrizations.weight.original0/1`
in fairseq files. fairseq pretraining-only modules (quantizer, project_q, final_proj) are ignored.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mlst_jax.convert.fairseq import _field, _model_args, _torch_load
from mlst_jax.convert.hf import _read_state, numpy_to_torch, require_torch, torch_to_numpy
from mlst_jax.convert.names import NameRule, from_state_dict, to_state_dict
from mlst_jax.models.wav2vec2 import Wav2Vec2Config, abstract_params


def hf_renames(scope: str = "") -> tuple[tuple[str, str], ...]:
    """Regex renames from our dotted names to HF's, applied only to keys that start with the regex `scope`."""
    pairs = ((r"\.self_attn\.", ".attention."), (r"\.self_attn_layer_norm\.", ".layer_norm."),
             (r"\.fc1\.", ".feed_forward.intermediate_dense."), (r"\.fc2\.", ".feed_forward.output_dense."),
             (r"\.pos_conv_embed\.weight_g$", ".pos_conv_embed.conv.parametrizations.weight.original0"),
             (r"\.pos_conv_embed\.weight_v$", ".pos_conv_embed.conv.parametrizations.weight.original1"),
             (r"\.pos_conv_embed\.bias$", ".pos_conv_embed.conv.bias"))
    return tuple((rf"^({scope}.*?){pattern}", rf"\1{repl}") for pattern, repl in pairs)


HF_RENAMES = hf_renames()
HF_WEIGHT_NORM = ((r"\.weight_g$", ".parametrizations.weight.original0"),
                  (r"\.weight_v$", ".parametrizations.weight.original1"))
FAIRSEQ_IGNORE = (r"^quantizer\.", r"^project_q\.", r"^final_proj\.", r"^project_inp\.", r"^target_glu\.",
                  r"(^|\.)_float_tensor$", r"(^|\.)version$", r"^label_embs_concat$")
FAIRSEQ_FINETUNED = "w2v_encoder.w2v_model."


def hf_rule(prefix: str = "") -> NameRule:
    """How HF names `Wav2Vec2` params, under `prefix` ('' for Wav2Vec2Model, 'wav2vec2.' inside ForCTC, whose
    `lm_head` is then skipped)."""
    return NameRule(prefix=prefix, renames=HF_RENAMES, ignore=(r"^lm_head\.",) if prefix else ())


def fairseq_rule(config: Wav2Vec2Config) -> NameRule:
    """How fairseq names `Wav2Vec2` params (the norm's position in the extractor depends on the variant)."""
    norm = r"\1.2.1." if config.feat_extract_norm == "layer" else r"\1.2."
    return NameRule(renames=(
        (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
        (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", "feature_extractor.conv_layers." + norm),
        (r"^feature_projection\.layer_norm\.", "layer_norm."),
        (r"^feature_projection\.projection\.", "post_extract_proj."),
        (r"^masked_spec_embed$", "mask_emb"), (r"^encoder\.pos_conv_embed\.", "encoder.pos_conv.0."),
        (r"^lm_head\.", "w2v_encoder.proj.")), ignore=FAIRSEQ_IGNORE)


def _rename(state: Mapping[str, np.ndarray], pairs) -> dict[str, np.ndarray]:
    out = {}
    for key, x in state.items():
        for pattern, repl in pairs:
            key = re.sub(pattern, repl, key)
        out[key] = x
    return out


def params_from_state_dict(state: Mapping[str, np.ndarray], config: Wav2Vec2Config, rule: NameRule, source: str,
                           ctc_head: bool = False) -> dict:
    """`Wav2Vec2` (or, with `ctc_head`, `Wav2Vec2ForCTC`) params from a state dict named by `rule`."""
    expected = abstract_params(config, ctc_head=ctc_head)
    return from_state_dict(state, expected, rule, source)


# -- HF ------------------------------------------------------------------------------------------------------

def config_from_hf(d: dict[str, Any], source: str = "config.json") -> Wav2Vec2Config:
    """Wav2Vec2Config from an HF `Wav2Vec2Config` dict (`dtype` there is the storage dtype and is not used)."""
    if d.get("model_type") != "wav2vec2":
        raise ValueError(f"{source}: model_type is {d.get('model_type')!r}, expected 'wav2vec2'")
    if d.get("add_adapter"):
        raise ValueError(f"{source}: add_adapter=True: the length adaptor belongs to XMEF (mlst_jax.models.xmef); "
                         "load a SpeechEncoderDecoder directory with load_hf_xmef")
    if d.get("adapter_attn_dim") is not None:
        raise ValueError(f"{source}: adapter_attn_dim={d['adapter_attn_dim']} (MMS attention adapters) "
                         "is not supported")
    d = dict(d)
    d.pop("dtype", None)
    if "num_feat_extract_layers" in d and d["num_feat_extract_layers"] != len(d.get("conv_dim", ())):
        raise ValueError(f"{source}: num_feat_extract_layers={d['num_feat_extract_layers']} does not match conv_dim")
    return Wav2Vec2Config.from_dict(d)


def config_to_hf(config: Wav2Vec2Config, storage_dtype: str = "float32", ctc_head: bool = False) -> dict[str, Any]:
    """HF `Wav2Vec2Config` dict of `config`."""
    d = config.to_dict()
    d.pop("dtype")
    del d["remat"], d["scan_layers"]  # run-time options, not the model's
    arch = "Wav2Vec2ForCTC" if ctc_head else "Wav2Vec2Model"
    return {"model_type": "wav2vec2", "architectures": [arch], "dtype": storage_dtype,
            "num_feat_extract_layers": config.num_feat_extract_layers, **d}


def split_hf_prefix(state: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    """('wav2vec2.' or '', state with legacy weight-norm names updated) for a Wav2Vec2Model / ForCTC state dict."""
    state = _rename(state, HF_WEIGHT_NORM)
    prefix = "wav2vec2." if any(k.startswith("wav2vec2.") for k in state) else ""
    return prefix, state


def load_hf_wav2vec2(path: str | Path, ctc_head: bool = False) -> tuple[Wav2Vec2Config, dict]:
    """(config, params) from an HF `Wav2Vec2Model` or `Wav2Vec2ForCTC` directory.

    Returns `Wav2Vec2` params; with `ctc_head=True`, `Wav2Vec2ForCTC` params (the directory must hold the head).
    A ForCTC directory's `lm_head` is dropped when `ctc_head` is False.
    """
    path = Path(path)
    config = config_from_hf(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    state, source = _read_state(path)
    prefix, state = split_hf_prefix(state)
    if ctc_head:
        if not prefix:
            raise ValueError(f"{source}: holds a Wav2Vec2Model without a CTC head (no 'wav2vec2.' / 'lm_head.' keys)")
        return config, params_from_state_dict(state, config, NameRule(renames=HF_RENAMES), str(source), True)
    return config, params_from_state_dict(state, config, hf_rule(prefix), str(source))


def save_hf_wav2vec2(path: str | Path, config: Wav2Vec2Config, params: Any) -> Path:
    """Writes `config.json` + `model.safetensors` loadable by HF `Wav2Vec2Model` (or `Wav2Vec2ForCTC` when
    `params` are `Wav2Vec2ForCTC` params)."""
    from safetensors.numpy import save_file

    path = Path(path)
    ctc_head = "lm_head" in params
    state = to_state_dict(params, NameRule(renames=HF_RENAMES))
    params_from_state_dict(state, config, NameRule(renames=HF_RENAMES), "params to export", ctc_head)
    dtypes = {str(x.dtype) for x in state.values()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    hf = config_to_hf(config, dtypes.pop() if len(dtypes) == 1 else "float32", ctc_head)
    (path / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    return path


# -- fairseq -------------------------------------------------------------------------------------------------

def parse_conv_layers(spec: str | list) -> list[tuple[int, int, int]]:
    """fairseq's `conv_feature_layers` ("[(512, 10, 5)] + [(512, 3, 2)] * 4 + ...") without `eval`:
    list/tuple literals of ints combined by `+` and `*`."""
    if not isinstance(spec, str):
        return [tuple(int(v) for v in layer) for layer in spec]

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(f"unsupported conv_feature_layers expression: {spec!r}")

    layers = ev(ast.parse(spec, mode="eval"))
    if not isinstance(layers, list) or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise ValueError(f"conv_feature_layers must be a list of (dim, kernel, stride), got {spec!r}")
    return layers


_FINETUNE_FIELDS = {"hidden_dropout": "dropout", "attention_dropout": "attention_dropout",
                    "activation_dropout": "activation_dropout", "feat_proj_dropout": "dropout_input",
                    "layerdrop": "layerdrop", "final_dropout": "final_dropout", "mask_time_prob": "mask_prob",
                    "mask_time_length": "mask_length", "mask_feature_prob": "mask_channel_prob",
                    "mask_feature_length": "mask_channel_length"}
_ACT = {"gelu_fast": "gelu_new", "gelu_accurate": "gelu_new"}
# Settings of fairseq's wav2vec 2.0 this model does not implement, with the supported value.
_REQUIRED = {"pos_conv_depth": 1, "conv_pos_batch_norm": False, "quantize_input": False}


def config_from_fairseq(args: Any, vocab_size: int = 32, source: str = "checkpoint") -> Wav2Vec2Config:
    """Wav2Vec2Config from fairseq wav2vec2 model args (defaults: fairseq's `Wav2Vec2Config`, the base model)."""
    def get(name, default):
        value = _field(args, name)
        return default if value is None else value

    for name, want in _REQUIRED.items():
        if get(name, want) != want:
            raise ValueError(f"{source}: {name}={get(name, want)!r} is not supported (needs {want!r})")
    mode = get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise ValueError(f"{source}: extractor_mode={mode!r} is not supported ('default' or 'layer_norm')")
    conv = parse_conv_layers(get("conv_feature_layers",
                                 "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"))
    act = get("activation_fn", "gelu")
    dropout = get("dropout", 0.1)
    mask_prob, mask_channel_prob = get("mask_prob", 0.65), get("mask_channel_prob", 0.0)
    return Wav2Vec2Config(
        vocab_size=vocab_size, hidden_size=get("encoder_embed_dim", 768), num_hidden_layers=get("encoder_layers", 12),
        num_attention_heads=get("encoder_attention_heads", 12), intermediate_size=get("encoder_ffn_embed_dim", 3072),
        hidden_act=_ACT.get(act, act), hidden_dropout=dropout, attention_dropout=get("attention_dropout", 0.1),
        activation_dropout=get("activation_dropout", 0.0), feat_proj_dropout=get("dropout_input", 0.0),
        layerdrop=get("encoder_layerdrop", 0.0), feat_extract_norm="layer" if mode == "layer_norm" else "group",
        conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv],
        conv_bias=bool(get("conv_bias", False)), num_conv_pos_embeddings=get("conv_pos", 128),
        num_conv_pos_embedding_groups=get("conv_pos_groups", 16),
        do_stable_layer_norm=bool(get("layer_norm_first", False)),
        mask_time_prob=mask_prob, mask_time_length=get("mask_length", 10), mask_feature_prob=mask_channel_prob,
        mask_feature_length=get("mask_channel_length", 10))


def config_to_fairseq(config: Wav2Vec2Config) -> argparse.Namespace:
    """fairseq `args` for `config` (arch wav2vec2)."""
    c = config
    conv = " + ".join(f"[({d}, {k}, {s})]" for d, k, s in zip(c.conv_dim, c.conv_kernel, c.conv_stride))
    return argparse.Namespace(
        arch="wav2vec2", extractor_mode="layer_norm" if c.feat_extract_norm == "layer" else "default",
        encoder_layers=c.num_hidden_layers, encoder_embed_dim=c.hidden_size, encoder_ffn_embed_dim=c.intermediate_size,
        encoder_attention_heads=c.num_attention_heads, activation_fn=c.hidden_act, conv_feature_layers=conv,
        conv_bias=c.conv_bias, conv_pos=c.num_conv_pos_embeddings, conv_pos_groups=c.num_conv_pos_embedding_groups,
        layer_norm_first=c.do_stable_layer_norm, dropout=c.hidden_dropout, attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout, dropout_input=c.feat_proj_dropout, encoder_layerdrop=c.layerdrop,
        mask_prob=c.mask_time_prob, mask_length=c.mask_time_length, mask_channel_prob=c.mask_feature_prob,
        mask_channel_length=c.mask_feature_length)


def _fairseq_state(ckpt: Mapping, source: str) -> tuple[Any, dict[str, np.ndarray], bool]:
    """(model args, state dict without the finetuning prefix, whether it is a CTC-finetuned checkpoint)."""
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        raise ValueError(f"{source}: not a fairseq checkpoint (no 'model' state dict)")
    torch = require_torch(f"reading {source}")
    state = {k: torch_to_numpy(v) for k, v in ckpt["model"].items() if isinstance(v, torch.Tensor)}
    args = _model_args(ckpt, source)
    finetuned = any(k.startswith(FAIRSEQ_FINETUNED) for k in state)
    if finetuned:
        inner = _field(args, "w2v_args")
        if inner is None:
            raise ValueError(f"{source}: finetuned wav2vec2 checkpoint without 'w2v_args'")
        args = _field(inner, "model") if _field(inner, "model") is not None else inner
        state = {k[len(FAIRSEQ_FINETUNED):] if k.startswith(FAIRSEQ_FINETUNED) else k: v for k, v in state.items()}
    state = _rename(state, ((r"\.parametrizations\.weight\.original0$", ".weight_g"),
                            (r"\.parametrizations\.weight\.original1$", ".weight_v")))
    return args, state, finetuned


def is_fairseq_wav2vec2(state_keys) -> bool:
    """Whether fairseq state-dict keys are those of a wav2vec 2.0 model (pretrained or finetuned)."""
    return any(k in ("post_extract_proj.weight", "mask_emb") or k.startswith(FAIRSEQ_FINETUNED)
               or k.startswith("feature_extractor.conv_layers.") for k in state_keys)


def wav2vec2_from_fairseq_checkpoint(ckpt: Mapping, source: str = "checkpoint",
                                     ctc_head: bool = False) -> tuple[Wav2Vec2Config, dict]:
    """(config, params) from a loaded fairseq wav2vec2 checkpoint dict (see `load_fairseq_wav2vec2`)."""
    args, state, finetuned = _fairseq_state(ckpt, source)
    if ctc_head and "w2v_encoder.proj.weight" not in state:
        raise ValueError(f"{source}: has no CTC head (w2v_encoder.proj.weight)")
    vocab = state["w2v_encoder.proj.weight"].shape[0] if "w2v_encoder.proj.weight" in state else 32
    config = config_from_fairseq(args, vocab, source)
    if finetuned:  # the finetuning run's regularization overrides the pretraining one's
        outer = _model_args(ckpt, source)
        over = {ours: _field(outer, theirs) for ours, theirs in _FINETUNE_FIELDS.items()}
        config = config.replace(**{k: v for k, v in over.items() if v is not None})
    if not ctc_head:
        state = {k: v for k, v in state.items() if not k.startswith("w2v_encoder.proj.")}
    if not config.has_masked_spec_embed:
        state.pop("mask_emb", None)
    rule = fairseq_rule(config)
    if ctc_head:
        rule = NameRule(renames=((r"^wav2vec2\.", ""),) + rule.renames, ignore=rule.ignore)
    return config, params_from_state_dict(state, config, rule, source, ctc_head)


def load_fairseq_wav2vec2(path: str | Path, trust_pickle: bool = False,
                          ctc_head: bool = False) -> tuple[Wav2Vec2Config, dict]:
    """(config, params) from a fairseq wav2vec 2.0 checkpoint `.pt` (pretrained `wav2vec2`, or `wav2vec_ctc`
    finetuned: its `w2v_encoder.proj` becomes the CTC head with `ctc_head=True` and is dropped otherwise).

    Loads with torch's weights-only unpickler; `trust_pickle=True` allows any Python object (omegaconf configs).
    """
    path = Path(path)
    return wav2vec2_from_fairseq_checkpoint(_torch_load(path, trust_pickle), str(path), ctc_head)


def save_fairseq_wav2vec2(path: str | Path, config: Wav2Vec2Config, params: Any) -> Path:
    """Writes a fairseq-style pretraining checkpoint {'args': Namespace, 'model': state dict} of `Wav2Vec2` params."""
    torch = require_torch("writing fairseq checkpoints")
    path = Path(path)
    rule = fairseq_rule(config)
    state = to_state_dict(params, rule)
    params_from_state_dict(state, config, rule, "params to export")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"args": config_to_fairseq(config), "model": {k: numpy_to_torch(v) for k, v in state.items()}}, path)
    return path
