"""Checkpoint conversion: HF Speech2Text directories and fairseq S2T checkpoints ↔ `S2TTransformer` params."""
from __future__ import annotations

import json
from pathlib import Path

from mlst_jax.convert.fairseq import load_fairseq_s2t, save_fairseq_s2t
from mlst_jax.convert.hf import load_hf_speech2text, save_hf_speech2text
from mlst_jax.models.s2t_transformer import S2TConfig

ACCEPTED = ("hf: a directory with config.json (model_type 'speech_to_text') and model.safetensors or "
            "pytorch_model.bin; fairseq: an S2T Transformer .pt file, or a directory holding exactly one "
            "checkpoint*.pt")

__all__ = ["load_checkpoint", "convert", "load_hf_speech2text", "save_hf_speech2text", "load_fairseq_s2t",
           "save_fairseq_s2t"]


def detect_kind(path: str | Path) -> tuple[str, Path]:
    """('hf' | 'fairseq', the path to load) for a checkpoint path; ValueError when it is neither."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").exists():
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
            if model_type == "speech_to_text":
                return "hf", path
            raise ValueError(f"{path}: config.json has model_type {model_type!r}; accepted: {ACCEPTED}")
        pts = sorted(path.glob("checkpoint*.pt"))
        if len(pts) == 1:
            return "fairseq", pts[0]
        if pts:
            raise ValueError(f"{path}: holds {len(pts)} checkpoints ({', '.join(p.name for p in pts)}); "
                             "name the one to load")
    elif path.is_file() and path.suffix == ".pt":
        return "fairseq", path
    raise ValueError(f"{path}: not a supported checkpoint; accepted: {ACCEPTED}")


def load_checkpoint(path: str | Path, trust_pickle: bool = False) -> tuple[str, S2TConfig, dict]:
    """(kind, config, params) from an HF Speech2Text directory or a fairseq S2T checkpoint (see `ACCEPTED`)."""
    kind, path = detect_kind(path)
    if kind == "hf":
        return (kind, *load_hf_speech2text(path))
    return (kind, *load_fairseq_s2t(path, trust_pickle=trust_pickle))


def convert(src: str | Path, dst: str | Path, trust_pickle: bool = False) -> tuple[str, S2TConfig]:
    """Writes an HF Speech2Text directory `dst` from any supported checkpoint `src`; returns (kind, config)."""
    kind, config, params = load_checkpoint(src, trust_pickle=trust_pickle)
    save_hf_speech2text(dst, config, params)
    return kind, config
