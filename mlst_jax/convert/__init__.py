"""Checkpoint conversion: HF Speech2Text directories and fairseq S2T checkpoints ↔ `S2TTransformer` params;
HF Wav2Vec2 / MBart / SpeechEncoderDecoder directories and fairseq wav2vec 2.0 checkpoints (`load_pretrained`);
the translation models `Translator.from_pretrained` serves (`load_translation_model`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlst_jax.convert import mbart, wav2vec2, xmef
from mlst_jax.convert.fairseq import _torch_load, load_fairseq_s2t, save_fairseq_s2t
from mlst_jax.convert.hf import load_hf_speech2text, save_hf_speech2text
from mlst_jax.models.s2t_transformer import S2TConfig

ACCEPTED = ("hf: a directory with config.json (model_type 'speech_to_text') and model.safetensors or "
            "pytorch_model.bin; fairseq: an S2T Transformer .pt file, or a directory holding exactly one "
            "checkpoint*.pt")
TRANSLATION_ACCEPTED = (ACCEPTED + "; xmef: an HF SpeechEncoderDecoderModel directory (config.json with model_type "
                        "'speech-encoder-decoder', a wav2vec2 encoder and an mbart decoder) and model.safetensors or "
                        "pytorch_model.bin; exported: a directory with mlst_model.json and params.safetensors (what "
                        "`mlst average` and Translator.save write)")

__all__ = ["load_checkpoint", "load_pretrained", "load_translation_model", "convert", "load_hf_speech2text",
           "save_hf_speech2text", "load_fairseq_s2t", "save_fairseq_s2t"]

# HF model types of the other models, and the name `load_pretrained` gives each.
OTHER_HF_MODELS = {"wav2vec2": "wav2vec2", "mbart": "mbart", "speech-encoder-decoder": "xmef"}


def hf_model_type(path: str | Path) -> str | None:
    """The `model_type` in `path/config.json`, or None when `path` is not a directory with a config.json."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").exists():
        return json.loads((path / "config.json").read_text()).get("model_type")
    return None


def detect_kind(path: str | Path, accepted: str = ACCEPTED) -> tuple[str, Path]:
    """('hf' | 'fairseq', the path to load) for an S2T checkpoint path; ValueError when it is neither, saying what
    `path` is when that is known (missing, a training run, a folder of exported models), else listing `accepted`."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.is_dir():
        if (path / "config.json").exists():
            model_type = hf_model_type(path)
            if model_type is None and (path / "checkpoints").is_dir():
                raise ValueError(f"{path} is a training run: export it with `mlst average --workdir {path} --out "
                                 "MODEL_DIR` first")
            if model_type == "speech_to_text":
                return "hf", path
            if model_type == "speech-encoder-decoder":
                raise ValueError(f"{path}: an XMEF (speech-encoder-decoder) checkpoint, not an S2T Transformer; load "
                                 "it with mlst_jax.Translator.from_pretrained or mlst_jax.convert.load_pretrained")
            if model_type in OTHER_HF_MODELS:
                raise ValueError(f"{path}: a {model_type} checkpoint, not an S2T Transformer; load it with "
                                 "mlst_jax.convert.load_pretrained")
            raise ValueError(f"{path}: config.json has model_type {model_type!r}; accepted: {accepted}")
        pts = sorted(path.glob("checkpoint*.pt"))
        if len(pts) == 1:
            return "fairseq", pts[0]
        if pts:
            raise ValueError(f"{path}: holds {len(pts)} checkpoints ({', '.join(p.name for p in pts)}); "
                             "name the one to load")
    elif path.is_file() and path.suffix == ".pt":
        return "fairseq", path
    raise ValueError(f"{path}: not a supported checkpoint; accepted: {accepted}")


def load_checkpoint(path: str | Path, trust_pickle: bool = False) -> tuple[str, S2TConfig, dict]:
    """(kind, config, params) from an HF Speech2Text directory or a fairseq S2T checkpoint (see `ACCEPTED`)."""
    kind, path = detect_kind(path)
    if kind == "hf":
        return (kind, *load_hf_speech2text(path))
    return (kind, *load_fairseq_s2t(path, trust_pickle=trust_pickle))


def load_translation_model(path: str | Path, trust_pickle: bool = False) -> tuple[str, str, Any, dict]:
    """(model, kind, config, params) of a checkpoint `Translator.from_pretrained` serves: model 's2t' (an
    `S2TConfig`, from what `load_checkpoint` accepts) or 'xmef' (an `XMEFConfig`, from an HF
    SpeechEncoderDecoderModel directory with a wav2vec2 encoder and an mbart decoder); kind 'hf' or 'fairseq'.
    ValueError listing `TRANSLATION_ACCEPTED` for anything else."""
    model_type = hf_model_type(path)
    if model_type == "speech-encoder-decoder":
        return ("xmef", "hf", *xmef.load_hf_xmef(path))
    if model_type in OTHER_HF_MODELS:
        raise ValueError(f"{path}: a {model_type} checkpoint, not a translation model; accepted: "
                         f"{TRANSLATION_ACCEPTED}")
    kind, file = detect_kind(path, TRANSLATION_ACCEPTED)
    if kind == "hf":
        return ("s2t", kind, *load_hf_speech2text(file))
    return ("s2t", kind, *load_fairseq_s2t(file, trust_pickle=trust_pickle))


def convert(src: str | Path, dst: str | Path, trust_pickle: bool = False) -> tuple[str, S2TConfig]:
    """Writes an HF Speech2Text directory `dst` from any supported checkpoint `src`; returns (kind, config)."""
    kind, config, params = load_checkpoint(src, trust_pickle=trust_pickle)
    save_hf_speech2text(dst, config, params)
    return kind, config


def load_pretrained(path: str | Path, trust_pickle: bool = False) -> tuple[str, str, Any, dict]:
    """(model, kind, config, params) from any supported checkpoint; model is 's2t', 'wav2vec2', 'mbart' or 'xmef'
    (the config is that model's), kind 'hf' or 'fairseq'. Accepts what `load_checkpoint` accepts, HF Wav2Vec2Model /
    Wav2Vec2ForCTC, MBartForConditionalGeneration and SpeechEncoderDecoderModel directories, and fairseq wav2vec 2.0
    checkpoints."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").exists():
        model_type = hf_model_type(path)
        loaders = {"wav2vec2": wav2vec2.load_hf_wav2vec2, "mbart": mbart.load_hf_mbart,
                   "speech-encoder-decoder": xmef.load_hf_xmef}
        if model_type in loaders:
            return (OTHER_HF_MODELS[model_type], "hf", *loaders[model_type](path))
    kind, file = detect_kind(path)
    if kind == "fairseq":
        ckpt = _torch_load(file, trust_pickle)
        if isinstance(ckpt, dict) and wav2vec2.is_fairseq_wav2vec2(ckpt.get("model", {})):
            return ("wav2vec2", kind, *wav2vec2.wav2vec2_from_fairseq_checkpoint(ckpt, str(file)))
    return ("s2t", *load_checkpoint(path, trust_pickle=trust_pickle))
