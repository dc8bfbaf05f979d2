"""Helpers for XMEF training tests: the tiny synthetic CoVoST 2 corpus, tiny random HF wav2vec 2.0 and mBART
directories of `configs/xmef_synth_tiny.py`'s sizes (mBART-50 id layout), and the config arguments of a run."""
import importlib.util
import shutil
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
XMEF_TINY = ROOT / "configs" / "xmef_synth_tiny.py"
PAIRS = ("de_en", "en_de", "en_fr")


class XmefData(NamedTuple):
    corpus: Path  # the CoVoST 2 layout
    data_dir: Path
    w2v: Path
    mbart: Path
    sp_size: int


def tiny_config_module():
    spec = importlib.util.spec_from_file_location("xmef_synth_tiny", XMEF_TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_xmef_data(root: Path, size=(8, 3, 3)) -> XmefData:
    """Synthesizes the corpus, prepares its TFDS data, trains a SentencePiece model on its texts and saves random HF
    models."""
    import sentencepiece as spm
    import torch
    import transformers

    from mlst_jax.convert.xmef import mbart50_vocab_size
    from mlst_jax.data.synthetic.corpus import synthesize_corpus
    from mlst_jax.data.tfds_builders import prepare

    synthesize_corpus(root / "synth", size=size, layouts=("covost2",), workers=1, progress=False)
    corpus = root / "synth" / "covost2"
    texts = [line.split("\t")[2] for pair in PAIRS
             for line in (corpus / f"covost_v2.{pair}.tsv").read_text().splitlines()[1:]]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(root / "spm"), vocab_size=120,
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2)
    sp_size = spm.SentencePieceProcessor(model_file=str(root / "spm.model")).get_piece_size()
    tiny = tiny_config_module()
    hf_encoder = {k: v for k, v in tiny.ENCODER.items()}
    hf_decoder = {k: v for k, v in tiny.DECODER.items() if k != "vocab_size"}
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**hf_encoder)).save_pretrained(root / "w2v")
    transformers.MBartForConditionalGeneration(transformers.MBartConfig(
        vocab_size=mbart50_vocab_size(sp_size), **hf_decoder)).save_pretrained(root / "mbart")
    shutil.copy(root / "spm.model", root / "mbart" / "sentencepiece.bpe.model")
    for pair in PAIRS:  # prepared once here: runs started side by side must not build the same data at once
        prepare("covost2", corpus, root / "tfds", pair)
    return XmefData(corpus, root / "tfds", root / "w2v", root / "mbart", sp_size)


def xmef_args(data: XmefData, fields: dict, arg: str = "") -> list[str]:
    """`--config` and `--config.FIELD=VALUE` arguments of xmef_synth_tiny on `data`, starting from the tiny HF
    checkpoints, with `fields` on top."""
    values = {"data.manual_dir": data.corpus, "data.data_dir": data.data_dir, "init.encoder": data.w2v,
              "init.decoder": data.mbart, "train.progress": False, **fields}
    spec = f"{XMEF_TINY}:{arg}" if arg else str(XMEF_TINY)
    return [f"--config={spec}"] + [f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
                                   for k, v in values.items()]
