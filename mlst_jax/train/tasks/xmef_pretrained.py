"""The pretrained parts an XMEF run starts from (`init.model`, or `init.encoder` + `init.decoder`): checked against
the experiment's model config from the directories' config files alone, then loaded and composed.

The pretrained directories' configs must describe the experiment's architecture: every field of the encoder
(`Wav2Vec2Config`) and decoder (`MBartConfig`) that shapes the weights or the computation must be equal, and with
`init.model` also the adaptor's; a mismatch raises a ValueError naming each field
(`model.xmef.encoder.hidden_size is 1024 in the config, 768 in the checkpoint`). Only the run-time settings come
from the config whatever the checkpoint says (`RUN_FIELDS`: dropouts, LayerDrop, masking, compute dtype, remat,
scan_layers; the decoder's vocabulary size is its SentencePiece model's); `add_final_logits_bias` follows the
checkpoint, and the weights are laid out as the config's layer stacks (stacked with `scan_layers`). The mBART
encoder's fields are compared only for the joint model, which uses the mBART encoder as its text encoder.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

RUN_FIELDS = {
    "encoder": frozenset({"vocab_size", "hidden_dropout", "activation_dropout", "attention_dropout",
                          "feat_proj_dropout", "final_dropout", "layerdrop", "apply_spec_augment", "mask_time_prob",
                          "mask_time_length", "mask_time_min_masks", "mask_feature_prob", "mask_feature_length",
                          "mask_feature_min_masks", "dtype", "remat", "scan_layers"}),
    # the decoder's vocabulary comes with the checkpoint (its sentencepiece.bpe.model); the weights' shapes check it
    "decoder": frozenset({"dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop",
                          "decoder_layerdrop", "dtype", "remat", "scan_layers", "add_final_logits_bias",
                          "vocab_size"}),
}
MBART_ENCODER_FIELDS = frozenset({"encoder_layers", "encoder_attention_heads", "encoder_ffn_dim"})
ADAPTOR_FIELDS = ("adaptor_layers", "adaptor_kernel_size", "adaptor_stride", "adaptor_layer_norm", "adaptor_proj")


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Where the pretrained parts come from, checked before anything heavy is loaded."""

    model: Path | None
    encoder: Path | None
    decoder: Path | None
    spm: Path  # the decoder's sentencepiece.bpe.model (it may be missing: then data.vocab names the vocabulary)
    cmvn: str  # the encoder's waveform normalization: "utterance" or "none"
    trust_pickle: bool = False


def _require_dir_kind(field: str, path: Path, want: str, what: str, allow_file: bool = False) -> None:
    from mlst_jax.convert import hf_model_type

    if not path.exists():
        raise ValueError(f"{field}={str(path)!r} does not exist")
    model_type = hf_model_type(path)
    if model_type == want or (model_type is None and allow_file and path.is_file()):
        return
    got = f"a {model_type!r} checkpoint (config.json model_type)" if model_type else "not an HF model directory"
    raise ValueError(f"{field}={str(path)!r}: {got}; expected {what}")


def _mismatches(want, got, skip: frozenset, prefix: str) -> list[str]:
    return [f"{prefix}{f.name} is {getattr(want, f.name)!r} in the config, {getattr(got, f.name)!r} in the "
            f"checkpoint" for f in dataclasses.fields(want)
            if f.name not in skip and getattr(want, f.name) != getattr(got, f.name)]


def check_agreement(config, source: str, encoder=None, decoder=None, adaptor=None, joint: bool = False) -> None:
    """ValueError naming every field where a checkpoint's config (`encoder`: Wav2Vec2Config, `decoder`: MBartConfig,
    `adaptor`: an XMEFConfig) differs from the experiment's XMEFConfig `config`."""
    problems = []
    if encoder is not None:
        problems += _mismatches(config.encoder, encoder, RUN_FIELDS["encoder"], "model.xmef.encoder.")
    if decoder is not None:
        skip = RUN_FIELDS["decoder"] if joint else RUN_FIELDS["decoder"] | MBART_ENCODER_FIELDS
        problems += _mismatches(config.decoder, decoder, skip, "model.xmef.decoder.")
    if adaptor is not None:
        problems += [f"model.xmef.{f} is {getattr(config, f)!r} in the config, {getattr(adaptor, f)!r} in the "
                     f"checkpoint" for f in ADAPTOR_FIELDS if getattr(config, f) != getattr(adaptor, f)]
    if problems:
        raise ValueError(f"{source} does not match the experiment config's model: " + "; ".join(problems)
                         + ". Use a checkpoint of the config's architecture, or a config whose model.xmef "
                           "(encoder_arch, encoder, decoder, adaptor_*) describes the checkpoint")


def check_pretrained(config, init, joint: bool = False) -> Pretrained | None:
    """The config's `init` block (`init.model` or `init.encoder` + `init.decoder`) checked against the XMEFConfig
    `config` from the directories' config.json files alone; None when it names nothing (random initialization)."""
    from mlst_jax.convert import mbart as mbart_convert
    from mlst_jax.convert import wav2vec2 as w2v_convert
    from mlst_jax.convert import xmef as xmef_convert

    if init.model and (init.encoder or init.decoder):
        raise ValueError("set either init.model (a SpeechEncoderDecoderModel directory) or init.encoder + "
                         "init.decoder, not both")
    if not (init.model or init.encoder or init.decoder):
        return None
    if not init.model and not (init.encoder and init.decoder):
        missing = "init.decoder" if init.encoder else "init.encoder"
        raise ValueError(f"{missing} is not set: XMEF starts from init.model, or from both init.encoder (wav2vec 2.0) "
                         "and init.decoder (mBART)")
    encoder = decoder = model = None
    if init.model:
        if joint:
            raise ValueError("init.model: the joint model needs the mBART encoder, which a SpeechEncoderDecoderModel "
                             "directory lacks; set init.encoder + init.decoder instead")
        model = Path(init.model)
        _require_dir_kind("init.model", model, "speech-encoder-decoder", "an HF SpeechEncoderDecoderModel directory "
                                                                       "(wav2vec2 encoder + mbart decoder)")
        cfg = xmef_convert.config_from_hf(json.loads((model / "config.json").read_text()), str(model / "config.json"))
        check_agreement(config, f"init.model={str(model)!r}", cfg.encoder, cfg.decoder, cfg)
        text_dir = audio_dir = model
    else:
        encoder, decoder = Path(init.encoder), Path(init.decoder)
        _require_dir_kind("init.encoder", encoder, "wav2vec2", "an HF Wav2Vec2Model / Wav2Vec2ForCTC directory "
                                                                 "(config.json model_type 'wav2vec2') or a fairseq "
                                                                 "wav2vec 2.0 checkpoint file", allow_file=True)
        _require_dir_kind("init.decoder", decoder, "mbart", "an HF MBartForConditionalGeneration directory "
                                                             "(config.json model_type 'mbart')")
        if encoder.is_dir():
            enc = w2v_convert.config_from_hf(json.loads((encoder / "config.json").read_text()),
                                             str(encoder / "config.json"))
            check_agreement(config, f"init.encoder={str(encoder)!r}", encoder=enc)
        dec = mbart_convert.config_from_hf(json.loads((decoder / "config.json").read_text()),
                                           str(decoder / "config.json"))
        check_agreement(config, f"init.decoder={str(decoder)!r}", decoder=dec, joint=joint)
        text_dir, audio_dir = decoder, encoder if encoder.is_dir() else encoder.parent
    spm = text_dir / xmef_convert.MBART_SPM
    return Pretrained(model, encoder, decoder, spm, xmef_convert.waveform_normalization(audio_dir), init.trust_pickle)


def _fit_masked_spec_embed(config, enc_params: dict, source: str) -> dict:
    """Encoder params with HF's `masked_spec_embed` kept or dropped as the config's masking needs it."""
    enc_params = dict(enc_params)
    has = "masked_spec_embed" in enc_params
    if config.encoder.has_masked_spec_embed and not has:
        raise ValueError(f"{source} has no masked_spec_embed (it was pretrained without time/feature masking) but "
                         "the config masks (model.xmef.encoder mask_time_prob / mask_feature_prob > 0); set them "
                         "to 0 in the config")
    if has and not config.encoder.has_masked_spec_embed:
        enc_params.pop("masked_spec_embed")
    return enc_params


def load_pretrained_parts(config, pre: Pretrained, seed: int = 0, joint_layers: int = 0) -> tuple[Any, dict]:
    """(model config, host params): the pretrained weights under the experiment's XMEFConfig (`add_final_logits_bias`
    from the checkpoint); the adaptor is new unless `init.model` holds one. With `joint_layers` > 0, the joint
    model's parameters (the mBART encoder becomes the text encoder and the shared layers) and its JointConfig."""
    from mlst_jax.convert import load_pretrained
    from mlst_jax.convert.xmef import xmef_from_pretrained
    from mlst_jax.models.params import stack_layers
    from mlst_jax.models.xmef import abstract_params

    mbart_params = None
    if pre.model:
        _, _, cfg, params = load_pretrained(pre.model)
        config = config.replace(decoder=config.decoder.replace(
            add_final_logits_bias=cfg.decoder.add_final_logits_bias))
        params = dict(params)
        params["encoder"] = _fit_masked_spec_embed(config, params["encoder"], f"init.model={str(pre.model)!r}")
    else:
        model, _, enc_cfg, enc_params = load_pretrained(pre.encoder, trust_pickle=pre.trust_pickle)
        if model != "wav2vec2":
            raise ValueError(f"init.encoder={str(pre.encoder)!r}: a {model} checkpoint; expected wav2vec 2.0")
        check_agreement(config, f"init.encoder={str(pre.encoder)!r}", encoder=enc_cfg)
        model, _, dec_cfg, mbart_params = load_pretrained(pre.decoder)
        if model != "mbart":
            raise ValueError(f"init.decoder={str(pre.decoder)!r}: a {model} checkpoint; expected mBART")
        config = config.replace(decoder=config.decoder.replace(add_final_logits_bias=dec_cfg.add_final_logits_bias))
        enc_params = enc_params.get("wav2vec2", enc_params)
        enc_params = _fit_masked_spec_embed(config, enc_params, f"init.encoder={str(pre.encoder)!r}")
        adaptor = {f: getattr(config, f) for f in ADAPTOR_FIELDS}
        _, params = xmef_from_pretrained((config.encoder, enc_params), (config.decoder, mbart_params), seed=seed,
                                         **adaptor)
    if joint_layers:
        from mlst_jax.models.joint import JointConfig, joint_from_pretrained

        jcfg = JointConfig(config, joint_layers)
        return jcfg, joint_from_pretrained(jcfg, params, mbart_params)
    abstract = abstract_params(config)
    params = stack_layers(params, abstract)
    expected = jax.tree.map(lambda x: tuple(x.shape), abstract)
    got = jax.tree.map(lambda x: tuple(np.shape(x)), params)
    if expected != got:
        raise ValueError(f"the pretrained weights do not fit the model config: expected {expected}, got {got}")
    return config, params
