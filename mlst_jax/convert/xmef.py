"""HF `SpeechEncoderDecoderModel` directories (wav2vec2 encoder, MBart causal-LM decoder) ↔ `XMEF` params, and
XMEF assembled from separately pretrained wav2vec 2.0 and mBART checkpoints.

Names: `encoder.*` are wav2vec2's HF names under `encoder.`; `adaptor.layers_i` ↔ `encoder.adapter.layers.i.conv`,
`adaptor.proj` / `adaptor.proj_layer_norm` ↔ `encoder.adapter.proj` / `.proj_layer_norm`; `decoder.*` ↔
`decoder.model.decoder.*`, with `decoder.lm_head` kept (an alias of the token embedding when the decoder config
ties them). HF's `enc_to_dec_proj` (encoder output width ≠ decoder width) and fairseq's adaptor input LayerNorm
have no counterpart in the other format.

The text side of such a directory: `MBart50Vocab` reads the `sentencepiece.bpe.model` that HF's `MBart50Tokenizer`
saves (fairseq's mBART-50 id layout: specials, pieces, the 52 language codes, `<mask>`); `waveform_normalization`
reads `do_normalize` from `preprocessor_config.json`. `mlst_jax.Translator.from_pretrained` uses all three.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import sentencepiece as spm
from safetensors.numpy import save_file

from mlst_jax.convert import mbart as mbart_convert
from mlst_jax.convert import wav2vec2 as w2v_convert
from mlst_jax.convert.hf import _read_state
from mlst_jax.convert.names import NameRule, from_state_dict, to_state_dict
from mlst_jax.models.mbart import MBART50_LANG_CODES, mbart50_lang_id
from mlst_jax.models.params import stack_layers
from mlst_jax.models.xmef import LengthAdaptor, XMEFConfig, abstract_params

HF_RULE = NameRule(renames=w2v_convert.hf_renames(r"encoder\.") + (
    (r"^adaptor\.layers\.(\d+)\.", r"encoder.adapter.layers.\1.conv."),
    (r"^adaptor\.proj\.", "encoder.adapter.proj."),
    (r"^adaptor\.proj_layer_norm\.", "encoder.adapter.proj_layer_norm."),
    (r"^decoder\.(?!lm_head\.)", "decoder.model.decoder.")))
DEC_EMBED, DEC_LM_HEAD = "decoder.model.decoder.embed_tokens.weight", "decoder.lm_head.weight"


def config_from_hf(d: dict[str, Any], source: str = "config.json") -> XMEFConfig:
    """XMEFConfig from an HF `SpeechEncoderDecoderConfig` dict with a wav2vec2 encoder and an mbart decoder."""
    if d.get("model_type") != "speech-encoder-decoder":
        raise ValueError(f"{source}: model_type is {d.get('model_type')!r}, expected 'speech-encoder-decoder'")
    enc, dec = dict(d.get("encoder") or {}), dict(d.get("decoder") or {})
    if enc.get("model_type") != "wav2vec2" or dec.get("model_type") != "mbart":
        types = f"{enc.get('model_type')!r}/{dec.get('model_type')!r}"
        raise ValueError(f"{source}: encoder/decoder model types are {types}; XMEF needs 'wav2vec2'/'mbart'")
    add_adapter = bool(enc.pop("add_adapter", False))
    k = enc.get("adapter_kernel_size", 3)
    hidden = enc.get("hidden_size", 768)
    out = enc.get("output_hidden_size") or hidden
    if add_adapter and k // 2 != 1:
        raise ValueError(f"{source}: adapter_kernel_size={k}: HF pads adapter convs by 1, ours by kernel//2; "
                         "only kernels 2 and 3 agree")
    width = out if add_adapter else hidden
    for key in ("pad_token_id", "decoder_start_token_id", "eos_token_id", "bos_token_id"):
        if d.get(key) is not None:
            dec[key] = d[key]
    decoder = mbart_convert.config_from_hf(dec, source + " (decoder)")
    if width != decoder.d_model:
        raise ValueError(f"{source}: encoder output width {width} != decoder d_model {decoder.d_model} "
                         "(HF's enc_to_dec_proj is not supported)")
    return XMEFConfig(encoder=w2v_convert.config_from_hf(enc, source + " (encoder)"), decoder=decoder,
                      adaptor_layers=enc.get("num_adapter_layers", 3) if add_adapter else 0,
                      adaptor_kernel_size=k, adaptor_stride=enc.get("adapter_stride", 2),
                      adaptor_proj=add_adapter and out != hidden)


def config_to_hf(config: XMEFConfig, storage_dtype: str = "float32") -> dict[str, Any]:
    """HF `SpeechEncoderDecoderConfig` dict of `config` (wav2vec2 with the adapter + MBartForCausalLM)."""
    if config.adaptor_layer_norm or (config.adaptor_layers == 0 and config.adaptor_proj):
        raise ValueError("HF's Wav2Vec2Adapter has no input LayerNorm and no projection without conv layers")
    enc = w2v_convert.config_to_hf(config.encoder, storage_dtype)
    enc.update(add_adapter=config.adaptor_layers > 0, num_adapter_layers=config.adaptor_layers,
               adapter_kernel_size=config.adaptor_kernel_size, adapter_stride=config.adaptor_stride,
               output_hidden_size=config.decoder.d_model if config.adaptor_proj else config.encoder.hidden_size,
               architectures=["Wav2Vec2Model"])
    dec = mbart_convert.config_to_hf(config.decoder, storage_dtype)
    dec.update(is_decoder=True, add_cross_attention=True, is_encoder_decoder=False, architectures=["MBartForCausalLM"])
    dc = config.decoder
    return {"model_type": "speech-encoder-decoder", "architectures": ["SpeechEncoderDecoderModel"],
            "is_encoder_decoder": True, "tie_word_embeddings": False, "encoder": enc, "decoder": dec,
            "decoder_start_token_id": dc.decoder_start_token_id, "pad_token_id": dc.pad_token_id,
            "eos_token_id": dc.eos_token_id, "dtype": storage_dtype}


def params_from_state_dict(state: Mapping[str, np.ndarray], config: XMEFConfig, source: str) -> dict:
    """`XMEF` params from an HF-named state dict; ValueError naming every missing, unexpected or mismatched key."""
    _, state = w2v_convert.split_hf_prefix(state)
    aliases = {DEC_LM_HEAD: DEC_EMBED} if config.decoder.tie_word_embeddings else {}
    return from_state_dict(state, abstract_params(config), HF_RULE, source, aliases)


def load_hf_xmef(path: str | Path) -> tuple[XMEFConfig, dict]:
    """(config, params) from an HF `SpeechEncoderDecoderModel` directory (wav2vec2 + MBart decoder)."""
    path = Path(path)
    config = config_from_hf(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    state, source = _read_state(path)
    return config, params_from_state_dict(state, config, str(source))


def save_hf_xmef(path: str | Path, config: XMEFConfig, params: Any) -> Path:
    """Writes `config.json` + `model.safetensors` loadable by HF `SpeechEncoderDecoderModel`."""
    hf = config_to_hf(config)
    path = Path(path)
    state = to_state_dict(params, HF_RULE)
    params_from_state_dict(state, config, "params to export")
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    return path


def xmef_from_pretrained(encoder: tuple, decoder: tuple, adaptor_params: Any | None = None, seed: int = 0,
                         **adaptor) -> tuple[XMEFConfig, dict]:
    """XMEF from pretrained wav2vec 2.0 `(config, params)` and mBART `(config, params)` as the loaders here return
    them (the decoder takes mBART's shared token embedding as its own); the adaptor (`adaptor_*` settings as
    keywords) is freshly initialized from `seed` unless `adaptor_params` are given. The parameters come back in the
    layout of the configs (layers stacked where `scan_layers` is set)."""
    (enc_cfg, enc_params), (dec_cfg, dec_params) = encoder, decoder
    config = XMEFConfig(encoder=enc_cfg, decoder=dec_cfg, **adaptor)
    dec = dict(dec_params["decoder"])
    if dec_cfg.tie_word_embeddings:
        dec["embed_tokens"] = dec_params["shared"]
    if adaptor_params is None:
        x = np.zeros((1, 1, enc_cfg.hidden_size), np.float32)
        adaptor_params = jax.jit(LengthAdaptor(config).init)(jax.random.PRNGKey(seed), x, np.ones((1,), np.int32))
        adaptor_params = jax.tree.map(np.asarray, adaptor_params.get("params", {}))
    abstract = abstract_params(config)
    params = stack_layers({"encoder": enc_params, "adaptor": adaptor_params, "decoder": dec}, abstract)
    expected = jax.tree.map(lambda x: tuple(x.shape), abstract)
    got = jax.tree.map(lambda x: tuple(np.shape(x)), params)
    if expected != got:
        raise ValueError(f"pretrained parts do not fit the XMEF config: expected {expected}, got {got}")
    return config, params


# -- the text side of an HF SpeechEncoderDecoderModel directory --------------------------------------------------

MBART_SPM = "sentencepiece.bpe.model"
N_SPECIALS = 4  # <s> <pad> </s> <unk>


class MBart50Vocab:
    """mBART-50's target vocabulary from its SentencePiece model (`sentencepiece.bpe.model`, as HF's
    `MBart50Tokenizer` saves it), in fairseq's id layout: 0..3 `<s> <pad> </s> <unk>`, SentencePiece piece i (i >= 3)
    at id i + 1, then the 52 mBART-50 language codes (`mlst_jax.models.mbart.MBART50_LANG_CODES`, from id
    `pieces + 1`), then `<mask>`. Decodes ids to text and maps target languages ('de' or 'de_DE') to code ids."""

    def __init__(self, spm_path: str | Path, codes: Mapping[str, str] | None = None):
        self.spm_path = str(spm_path)
        self.sp = spm.SentencePieceProcessor(model_file=self.spm_path)
        self.sp_size = self.sp.get_piece_size()
        if self.sp_size < N_SPECIALS - 1:
            raise ValueError(f"{spm_path}: a SentencePiece model of {self.sp_size} pieces is not mBART's")
        self.codes = dict(codes or {})  # language -> mBART-50 code, for languages mBART-50 lacks

    def __len__(self) -> int:
        return mbart50_vocab_size(self.sp_size)

    @property
    def languages(self) -> list[str]:
        return list(MBART50_LANG_CODES)

    def lang_id(self, lang: str) -> int:
        """Id of the mBART-50 code of `lang` ('de', 'de_DE', 'de-de', or a language of `codes`); ValueError naming
        the known codes."""
        return mbart50_lang_id_checked(self.codes.get(lang, lang), self.sp_size)

    def encode(self, text: str, lang: str | None = None, add_eos: bool = True) -> list[int]:
        """Text -> ids, with the code of `lang` first and `</s>` last: HF `MBart50Tokenizer` with `tgt_lang` (or
        `src_lang`) set. SentencePiece piece i > 0 is id i + 1; its unknown piece (0) is `<unk>` (3)."""
        ids = [i + 1 if i > 0 else 3 for i in self.sp.encode(text, out_type=int)]
        return ([self.lang_id(lang)] if lang else []) + ids + ([2] if add_eos else [])

    def decode(self, ids) -> str:
        """Ids → detokenized text, stopping at `</s>` and dropping specials, language codes and `<mask>` (as HF
        `decode(ids, skip_special_tokens=True)`)."""
        pieces = []
        for i in map(int, ids):
            if i == 2:
                break
            if N_SPECIALS <= i <= self.sp_size:
                pieces.append(self.sp.id_to_piece(i - 1))
            elif not 0 <= i < len(self):
                raise ValueError(f"token id {i} out of range for a vocabulary of {len(self)}")
        return self.sp.decode_pieces(pieces)

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if Path(self.spm_path).resolve() != (d / MBART_SPM).resolve():
            (d / MBART_SPM).write_bytes(Path(self.spm_path).read_bytes())


def mbart50_vocab_size(sp_size: int) -> int:
    """Size of mBART-50's vocabulary for a SentencePiece model of `sp_size` pieces (250,054 for the released one)."""
    return sp_size + 1 + len(MBART50_LANG_CODES) + 1


def mbart50_lang_id_checked(lang: str, sp_size: int) -> int:
    """`mbart50_lang_id`, with a ValueError that says which target language is unknown."""
    if not isinstance(lang, str):
        raise ValueError(f"target language must be a language code such as 'de' or 'de_DE', got {lang!r}")
    try:
        return mbart50_lang_id(lang, sp_size)
    except ValueError as e:
        raise ValueError(f"unknown target language {lang!r}: {e}") from None


def load_mbart50_vocab(directory: str | Path) -> MBart50Vocab | None:
    """The `MBart50Vocab` of `sentencepiece.bpe.model` in `directory`, or None when there is none."""
    f = Path(directory) / MBART_SPM
    return MBart50Vocab(f) if f.is_file() else None


def waveform_normalization(directory: str | Path) -> str:
    """'utterance' (zero mean, unit variance per waveform) or 'none', from the `do_normalize` of the directory's
    `preprocessor_config.json` (HF `Wav2Vec2FeatureExtractor`); 'utterance', HF's default, when there is none."""
    f = Path(directory) / "preprocessor_config.json"
    if f.is_file():
        return "utterance" if json.loads(f.read_text()).get("do_normalize", True) else "none"
    return "utterance"
