"""Finding the target vocabulary that belongs to a checkpoint (HF dir or fairseq checkpoint dir)."""
from __future__ import annotations

import logging
from pathlib import Path

import yaml

from mlst_jax.data.vocab import HF_SPM, HF_VOCAB, Vocab

log = logging.getLogger(__name__)


def _fairseq_vocab(directory: Path) -> Vocab | None:
    """fairseq S2T: `config.yaml` names `vocab_filename` and `bpe_tokenizer.sentencepiece_model`."""
    cfg_path = directory / "config.yaml"
    if cfg_path.is_file():
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        dict_name = cfg.get("vocab_filename")
        spm_name = (cfg.get("bpe_tokenizer") or {}).get("sentencepiece_model")
        if not dict_name or not spm_name:
            raise ValueError(f"{cfg_path}: needs 'vocab_filename' and 'bpe_tokenizer.sentencepiece_model'")
        for name in (dict_name, spm_name):
            if not (directory / name).is_file():
                raise ValueError(f"{cfg_path} names {name}, which is not in {directory}")
        return Vocab.from_fairseq(directory / dict_name, directory / spm_name)
    models = sorted(directory.glob("spm*.model"))
    if len(models) == 1 and models[0].with_suffix(".txt").is_file():
        return Vocab.from_fairseq(models[0].with_suffix(".txt"), models[0])
    return None


def load_vocab(path: str | Path, kind: str) -> Vocab | None:
    """The vocabulary stored beside a checkpoint of `kind` ('hf' or 'fairseq'), or None (with a warning)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    if kind == "hf" and (directory / HF_VOCAB).is_file() and (directory / HF_SPM).is_file():
        vocab = Vocab.from_hf_dir(directory)
    elif kind == "fairseq":
        vocab = _fairseq_vocab(directory)
    else:
        vocab = None
    if vocab is None:
        log.warning("no vocabulary found beside %s: generate() works with tag ids, translate() is unavailable", path)
    return vocab
