"""Translator serving XMEF (wav2vec 2.0 → length adaptor → mBART decoder) from an HF SpeechEncoderDecoderModel
directory: logits and greedy decoding against HF, the mBART-50 language codes, the tokenizer (present or not),
save → from_pretrained, and `mlst translate`. Conventions (tiny config, perturbed weights) follow
tests/models/test_xmef.py."""
import json
import logging
import shutil

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mlst_jax import cli  # noqa: E402
from mlst_jax.convert.xmef import MBart50Vocab  # noqa: E402
from mlst_jax.models.mbart import MBART50_LANG_CODES  # noqa: E402
from mlst_jax.translator import Translator  # noqa: E402
from torch_reference import perturb

pytestmark = pytest.mark.torch

TOL = 1e-4
PAD, EOS = 1, 2
LENGTHS = (1700, 1200, 950)
MAX_B = 8
TEXTS = ["das ist ein kleines Haus", "le chat est noir et blanc", "ich sehe den Hund im Garten",
         "la maison est grande", "wir gehen nach Hause"] * 8
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               conv_dim=(16, 12, 16), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=6,
               num_conv_pos_embedding_groups=4, feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True,
               add_adapter=True, output_hidden_size=32, num_adapter_layers=2, adapter_kernel_size=3,
               adapter_stride=2)
DECODER = dict(d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=40, max_position_embeddings=32,
               scale_embedding=True, is_decoder=True, add_cross_attention=True, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An HF wav2vec2 + mBART directory with a tiny mBART-50-layout tokenizer (`hf`), the same weights as
    pytorch_model.bin without a tokenizer (`bare`), and the Translator loaded from `hf`."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("xmef")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_prefix=str(root / "spm"), vocab_size=30,
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2)  # ids: <unk> <s> </s>
    sp_size = spm.SentencePieceProcessor(model_file=str(root / "spm.model")).get_piece_size()
    vocab_size = sp_size + 1 + len(MBART50_LANG_CODES) + 1
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.Wav2Vec2Config(**ENCODER), transformers.MBartConfig(vocab_size=vocab_size, **DECODER))
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = EOS, PAD, EOS
    torch.manual_seed(0)
    hf = perturb(torch, transformers.SpeechEncoderDecoderModel(config))
    with torch.no_grad():  # no logit for the language codes and <mask>: greedy picks text, input-dependent
        hf.decoder.lm_head.weight[sp_size + 1:] = 0.0
    hf.generation_config.forced_eos_token_id = None  # MBart's default would force </s> at max_length
    hf.save_pretrained(root / "hf")
    shutil.copy(root / "spm.model", root / "hf" / "sentencepiece.bpe.model")
    (root / "bare").mkdir()
    shutil.copy(root / "hf" / "config.json", root / "bare" / "config.json")
    torch.save(hf.state_dict(), root / "bare" / "pytorch_model.bin")
    rng = np.random.RandomState(0)
    wav = rng.randn(len(LENGTHS), max(LENGTHS)).astype(np.float32)
    for i, n in enumerate(LENGTHS):
        wav[i, n:] = 0.0
    return dict(root=root, hf=hf, sp_size=sp_size, t=Translator.from_pretrained(root / "hf"), wav=wav,
                lens=np.array(LENGTHS))


def _hf_greedy(hf, wav, tag):
    with torch.no_grad():
        out = hf.generate(input_values=torch.from_numpy(wav[None]), num_beams=1, do_sample=False,
                          max_new_tokens=MAX_B + 1, decoder_start_token_id=EOS, forced_bos_token_id=tag,
                          forced_eos_token_id=None, pad_token_id=PAD, eos_token_id=EOS)
    ids = out[0].tolist()[1:]  # drop the decoder start
    return ids[: ids.index(EOS)] if EOS in ids else ids


def test_loads_as_xmef_with_the_tokenizer(env):
    t = env["t"]
    assert t.family.architecture == "xmef" and t.cmvn == "utterance"
    assert isinstance(t.vocab, MBart50Vocab) and len(t.vocab) == t.config.vocab_size
    de = env["sp_size"] + 1 + MBART50_LANG_CODES.index("de_DE")
    assert t.lang_id("de") == t.lang_id("de_DE") == t.lang_id("DE-de") == de
    assert t.lang_id("en") == env["sp_size"] + 1 + MBART50_LANG_CODES.index("en_XX")


def test_logits_match_hf(env):
    t, hf, wav = env["t"], env["hf"], env["wav"]
    tgt = np.random.RandomState(1).randint(3, t.config.vocab_size, (len(LENGTHS), 6))
    tgt[:, 0], tgt[:, 1] = EOS, t.lang_id("fr")
    ours = t.logits(wav, env["lens"], tgt)  # one padded batch
    with torch.no_grad():
        for i, n in enumerate(LENGTHS):
            ref = hf(input_values=torch.from_numpy(wav[i:i + 1, :n]),
                     decoder_input_ids=torch.from_numpy(tgt[i:i + 1])).logits[0].numpy()
            assert np.abs(ours[i] - ref).max() <= TOL
    assert np.abs(ours).max() > 1.0


def test_greedy_matches_hf_generate(env):
    t, hf, wav = env["t"], env["hf"], env["wav"]
    ours = t.generate(wav, env["lens"], "de", beam_size=1, max_len_b=MAX_B, convention="hf")
    tag = t.lang_id("de_DE")
    for i, n in enumerate(LENGTHS):
        assert ours[i] == _hf_greedy(hf, wav[i, :n], tag)
        assert ours[i][0] == tag and len(ours[i]) > 1
    assert len({tuple(h) for h in ours}) == len(LENGTHS)


def test_pytorch_bin_without_tokenizer(env):
    """Same weights from pytorch_model.bin; no sentencepiece.bpe.model: generate() still works (codes placed by
    mBART-50's layout), translate() says what is missing."""
    t, bare = env["t"], Translator.from_pretrained(env["root"] / "bare")
    assert bare.vocab is None and bare.config == t.config
    jax.tree.map(np.testing.assert_array_equal, bare.params, t.params)
    assert bare.lang_id("de") == t.lang_id("de")
    kw = dict(beam_size=1, max_len_b=MAX_B, convention="hf")
    assert bare.generate(env["wav"], env["lens"], "de_DE", **kw) == t.generate(env["wav"], env["lens"], "de", **kw)
    with pytest.raises(ValueError, match="no tokenizer.*sentencepiece.bpe.model.*generate"):
        bare.translate([env["wav"][0]], 16000, "de")


def test_unknown_language(env):
    t, bare = env["t"], Translator(env["t"].config, env["t"].params)
    for m in (t, bare):
        with pytest.raises(ValueError, match="unknown target language 'xx'.*de_DE"):
            m.generate(env["wav"], env["lens"], "xx", beam_size=1, max_len_b=MAX_B)
    with pytest.raises(ValueError, match="unknown target language 'klingon'"):
        t.translate([env["wav"][0]], 16000, "klingon")
    with pytest.raises(ValueError, match="too short: 20 samples"):
        t.translate([np.zeros(20, np.float32)], 16000, "de")
    with pytest.raises(ValueError, match="16000 Hz"):
        t.translate([env["wav"][0]], 8000, "de")


def test_export_serving_one_language_accepts_its_codes_only(env, tmp_path):
    """An export recording langs ('de',) answers for 'de' and 'de_DE' (the same mBART-50 code), not for 'fr'."""
    t = env["t"]
    Translator(t.config, t.params, t.vocab, t.cmvn, langs=("de",)).save(tmp_path / "de")
    de = Translator.from_pretrained(tmp_path / "de")
    assert de.langs == ("de",) and de.lang_id("de_DE") == de.lang_id("de") == t.lang_id("de")
    with pytest.raises(ValueError) as e:
        de.generate(env["wav"], env["lens"], "fr_XX", beam_size=1, max_len_b=MAX_B)
    assert str(e.value) == f"{tmp_path / 'de'} serves de only, not fr_XX"


def test_silence_and_unnormalized_audio_warn(env, caplog):
    t = env["t"]
    wav = env["wav"][0, : LENGTHS[0]]
    loud = np.clip(100 * wav, -8.0, 8.0)  # peak exactly 8
    kw = dict(beam_size=1, max_len_b=MAX_B)
    with caplog.at_level(logging.WARNING, logger="mlst_jax.translator"):
        texts = t.translate([np.zeros(1600, np.float32), loud], 16000, "de", names=["zero.wav", "loud.wav"], **kw)
    assert [r.getMessage() for r in caplog.records] == [
        "zero.wav: silence (all 1600 samples are 0.0); translated as it is",
        "loud.wav: clipping or unnormalized float input (peak 8.0); scaled to peak 1.0"]
    assert texts[1] == t.translate([loud / 8.0], 16000, "de", **kw)[0]
    raw = Translator(t.config, t.params, t.vocab, "none")  # no normalization: the model sees the scaled samples
    np.testing.assert_array_equal(raw._audio_input(loud, 16000, "loud.wav"), loud / 8.0)


def test_other_checkpoints_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(ValueError, match="wav2vec2 checkpoint, not a translation model.*speech-encoder-decoder"):
        Translator.from_pretrained(tmp_path)


def test_save_round_trip_is_bitwise(env, tmp_path):
    t = env["t"]
    t.save(tmp_path / "model")
    assert (tmp_path / "model" / "sentencepiece.bpe.model").is_file()
    again = Translator.from_pretrained(tmp_path / "model")
    assert again.family.architecture == "xmef" and again.config == t.config and again.cmvn == t.cmvn
    assert isinstance(again.vocab, MBart50Vocab) and again.vocab.sp_size == t.vocab.sp_size
    assert jax.tree.structure(again.params) == jax.tree.structure(t.params)
    jax.tree.map(np.testing.assert_array_equal, again.params, t.params)
    dec = np.array([[EOS, t.lang_id("de"), 5, 9]] * len(LENGTHS))
    np.testing.assert_array_equal(again.logits(env["wav"], env["lens"], dec), t.logits(env["wav"], env["lens"], dec))


def test_decode_matches_hf_tokenizer(env):
    t = env["t"]
    try:
        tok = transformers.MBart50Tokenizer.from_pretrained(env["root"] / "hf")
    except Exception as e:  # the conversion from SentencePiece needs optional packages
        pytest.skip(f"MBart50Tokenizer cannot load the tiny model: {e}")
    assert tok.convert_tokens_to_ids("de_DE") == t.lang_id("de")
    ids = tok("das ist ein Haus", text_target="le chat est noir").input_ids
    assert t.vocab.decode(ids) == tok.decode(ids, skip_special_tokens=True)


def test_translate_and_cli(env, tmp_path, capsys):
    import soundfile as sf

    t = env["t"]
    rng = np.random.default_rng(1)
    wavs = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (1600, 1200, 900)]
    kw = dict(beam_size=1, max_len_b=MAX_B)
    texts = t.translate(wavs, 16000, "de", **kw)
    normed = np.zeros((3, 1600), np.float32)
    for i, w in enumerate(wavs):
        normed[i, : len(w)] = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
    ids = t.generate(normed, [len(w) for w in wavs], "de", **kw)
    assert texts == [t.vocab.decode(h) for h in ids] and all(isinstance(s, str) and s for s in texts)
    files = [tmp_path / f"{name}.wav" for name in "abc"]
    for f, w in zip(files, wavs):
        sf.write(f, w, 16000, subtype="FLOAT")
    assert cli.main(["translate", "--checkpoint", str(env["root"] / "hf"), "--tgt-lang", "de", "--beam", "1",
                     "--max-len-b", str(MAX_B), *map(str, files)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["audio"] for line in lines] == list(map(str, files))
    assert [line["translation"] for line in lines] == texts
    assert {line["tgt_lang"] for line in lines} == {"de"}
    assert cli.main(["translate", "--checkpoint", str(env["root"] / "bare"), "--tgt-lang", "de", str(files[0])]) == 2
    assert "no tokenizer" in capsys.readouterr().err
