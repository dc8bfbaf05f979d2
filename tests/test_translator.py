"""Translator: decoding against HF `generate`, export round trip, input errors and the `mlst translate` CLI."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mlst_jax import cli  # noqa: E402
from mlst_jax.data.vocab import train_vocab  # noqa: E402
from mlst_jax.translator import Translator  # noqa: E402

pytestmark = pytest.mark.torch

TAG = 7  # stands in for a language tag in the vocabulary-free model
LENS = (70, 50, 37)
MAX_B = 12


def _hf_model(seed: int, vocab: int, peak: float, eos_bias: float = 0.0):
    torch.manual_seed(seed)
    cfg = transformers.Speech2TextConfig(
        vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, conv_channels=32,
        conv_kernel_sizes=(5, 5), num_conv_layers=2, max_source_positions=256, max_target_positions=64,
        dropout=0.0, tie_word_embeddings=False)
    model = transformers.Speech2TextForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(peak)  # peaked output distributions: decisions robust to float noise
        if eos_bias:  # a constant direction in the final LayerNorm output that the </s> row reads
            u = torch.ones(32) / 32 ** 0.5
            model.model.decoder.layer_norm.bias.copy_(u)
            model.lm_head.weight[cfg.eos_token_id] = eos_bias * peak * u
    return model


@pytest.fixture(scope="module", params=["long", "eos"])
def hf_pair(request, tmp_path_factory):
    """'long': hypotheses run to the maximum length; 'eos': greedy ends after a few tokens, beams right away."""
    model = _hf_model(0, 40, 12.0, eos_bias=0.2 if request.param == "eos" else 0.0)
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path)
    return model, Translator.from_pretrained(path), request.param


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    feats = np.zeros((len(LENS), max(LENS), 80), np.float32)
    for i, n in enumerate(LENS):
        feats[i, :n] = rng.standard_normal((n, 80))
    return feats, np.array(LENS)


def _hf_generate(model, feats, n, **kw):
    with torch.no_grad():
        out = model.generate(input_features=torch.from_numpy(feats[None, :n]),
                             attention_mask=torch.ones(1, n, dtype=torch.long), forced_bos_token_id=TAG,
                             max_new_tokens=MAX_B + 1, do_sample=False, **kw)
    ids = out[0].tolist()[1:]  # drop the decoder start
    eos = model.config.eos_token_id
    return ids[: ids.index(eos)] if eos in ids else ids


def test_beam1_equals_teacher_forced_greedy(hf_pair, batch):
    _, t, _ = hf_pair
    feats, lens = batch
    got = t.generate(feats, lens, TAG, beam_size=1, max_len_b=MAX_B)
    for i in range(len(lens)):
        ids = [2, TAG]
        while len(ids) <= MAX_B:
            nxt = int(t.logits(feats[i: i + 1], lens[i: i + 1], np.array([ids]))[0, -1].argmax())
            if nxt == 2:
                break
            ids.append(nxt)
        assert got[i] == ids[1:]
        assert got[i][0] == TAG


def test_greedy_matches_hf_generate(hf_pair, batch):
    model, t, kind = hf_pair
    feats, lens = batch
    ours = t.generate(feats, lens, TAG, beam_size=1, max_len_b=MAX_B, convention="hf")
    for i, n in enumerate(lens):
        assert ours[i] == _hf_generate(model, feats[i], n, num_beams=1)
    assert {len(h) for h in ours} == ({5} if kind == "eos" else {MAX_B + 1})


@pytest.mark.parametrize("lenpen", [1.0, 0.6])
def test_beam5_matches_hf_generate(hf_pair, batch, lenpen):
    model, t, kind = hf_pair
    feats, lens = batch
    ours = t.generate(feats, lens, TAG, beam_size=5, length_penalty=lenpen, max_len_b=MAX_B, convention="hf")
    for i, n in enumerate(lens):
        assert ours[i] == _hf_generate(model, feats[i], n, num_beams=5, early_stopping=True, length_penalty=lenpen)
    assert {len(h) for h in ours} == ({1} if kind == "eos" else {MAX_B + 1})


def test_fairseq_convention_differs_only_in_scoring(hf_pair, batch):
    """fairseq's convention scores the forced tag; with an n-best list both conventions see the same set."""
    _, t, _ = hf_pair
    feats, lens = batch
    nbest = t.generate(feats, lens, TAG, beam_size=5, max_len_b=MAX_B, n_best=5)
    assert len(nbest) == len(lens) and all(len(h) == 5 for h in nbest)
    assert all(h[0] == TAG for hyps in nbest for h in hyps)
    assert nbest[0][0] == t.generate(feats, lens, TAG, beam_size=5, max_len_b=MAX_B)[0]


def test_padding_and_batch_do_not_change_outputs(hf_pair, batch):
    _, t, _ = hf_pair
    feats, lens = batch
    dec = np.array([[2, TAG, 5, 9, 11]])
    alone = t.logits(feats[2:3, : lens[2]], lens[2:3], dec)
    in_batch = t.logits(feats, lens, np.repeat(dec, 3, axis=0))[2:3]
    np.testing.assert_allclose(alone, in_batch, atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model with a real vocabulary (random weights), exported with `Translator.save`."""
    d = tmp_path_factory.mktemp("export")
    vocab = train_vocab(["das ist ein Haus", "le chat est noir", "ich sehe den Hund"] * 10, d / "spm", 40, ["de", "fr"])
    model = _hf_model(1, len(vocab), 4.0)
    model.save_pretrained(d / "hf")
    src = Translator.from_pretrained(d / "hf")
    t = Translator(src.config, src.params, vocab)
    t.save(d / "model")
    return d / "model", t


def test_export_round_trip(exported, batch):
    path, t = exported
    again = Translator.from_pretrained(path)
    feats, lens = batch
    dec = np.array([[2, 4, 9, 10]] * 3)
    np.testing.assert_array_equal(again.logits(feats, lens, dec), t.logits(feats, lens, dec))
    assert again.vocab.languages == ["de", "fr"] and again.cmvn == "utterance"


def test_translate_and_cli(exported, tmp_path, capsys):
    import soundfile as sf

    path, t = exported
    rng = np.random.default_rng(1)
    wav = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    texts = t.translate([wav, wav[:8000]], 16000, "fr", beam_size=2, max_len_b=6)
    assert len(texts) == 2 and all(isinstance(s, str) for s in texts)
    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    sf.write(files[0], wav, 16000)
    sf.write(files[1], wav[:8000], 16000)
    assert cli.main(["translate", "--checkpoint", str(path), "--tgt-lang", "fr", "--beam", "2",
                     "--max-len-b", "6", *map(str, files)]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.strip().splitlines()]
    assert [l["audio"] for l in lines] == list(map(str, files))
    assert [l["translation"] for l in lines] == texts


def test_input_errors(exported, batch, tmp_path):
    _, tv = exported
    t = Translator(tv.config, tv.params)  # the same model without a vocabulary
    feats, lens = batch
    with pytest.raises(ValueError, match="unknown target language 'xx'.*'de', 'fr'"):
        tv.generate(feats, lens, "xx")
    with pytest.raises(ValueError, match="no vocabulary"):
        t.generate(feats, lens, "de")
    with pytest.raises(ValueError, match=rf"token ids out of range \[0, {len(tv.vocab)}\): \[{len(tv.vocab)}, 99\]"):
        t.logits(feats, lens, np.array([[2, len(tv.vocab), 99]] * 3))
    with pytest.raises(ValueError, match="NaN"):
        bad = feats.copy()
        bad[0, 0, 0] = np.nan
        t.logits(bad, lens, np.array([[2]] * 3))
    with pytest.raises(ValueError, match="empty"):
        tv.translate([np.zeros(0, np.float32)], 16000, "de")
    with pytest.raises(ValueError, match="NaN"):
        tv.translate([np.full(16000, np.nan, np.float32)], 16000, "de")
    with pytest.raises(ValueError, match="too short: 100 samples.*one 25 ms frame"):
        tv.translate([np.zeros(100, np.float32)], 16000, "de")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="junk"):
        Translator.from_pretrained(tmp_path / "junk")
    assert cli.main(["translate", "--checkpoint", str(tmp_path / "junk"), "--tgt-lang", "de", "x.wav"]) == 2
