"""Multi-way batches from TFDS sources: features and references of every aligned utterance, alignment, waveform
features."""
from dataclasses import replace

import numpy as np
import pytest

from mlst_jax.data.multiway_pipeline import make_multiway_pipeline
from mlst_jax.data.batch_shapes import PipelineConfig

LANGS = ("de", "es", "fr")
CFG = PipelineConfig(langs=LANGS, read_threads=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny synthetic MuST-C (16/4/4 utterances per direction) prepared to TFDS, and a vocabulary."""
    from mlst_jax.data.layouts import read_text_lines
    from mlst_jax.data.synthetic.corpus import synthesize_corpus
    from mlst_jax.data.tfds_builders import prepare
    from mlst_jax.data.vocab import train_vocab

    root, data = tmp_path_factory.mktemp("corpus"), tmp_path_factory.mktemp("tfds")
    synthesize_corpus(root, (16, 4, 4), workers=1, progress=False)
    for lang in LANGS:
        prepare("mustc", root / "mustc", data, f"en-{lang}")
    texts = [t for l in LANGS for t in read_text_lines(root / "mustc" / f"en-{l}" / "data" / "train" / "txt" /
                                                        f"train.{l}")]
    return root / "mustc", data, train_vocab(texts, tmp_path_factory.mktemp("vocab") / "spm", 120, [*LANGS, "en"])


def tfds_sources(data, split):
    from mlst_jax.data.tfds_builders import MustC, tfds_split_name

    return {l: MustC(config=f"en-{l}", data_dir=data).as_data_source(tfds_split_name(split)) for l in LANGS}


def test_batches_hold_every_aligned_utterance_with_its_fbank_and_references(corpus):
    from mlst_jax.audio import fbank, utterance_cmvn

    _, data, vocab = corpus
    sources = tfds_sources(data, "tst-COMMON")
    batches = make_multiway_pipeline(sources, vocab, CFG, 3, num_buckets=2)
    assert batches.langs == LANGS and len(batches.utterances) == 4 and len(batches) == 2 and len(batches.shapes) <= 2
    assert batches.stats.kept == {l: 4 for l in LANGS} and batches.stats.dropped == {}
    seen = []
    for i, b in enumerate(batches):
        n, rows, u = b["target"].shape
        assert (n, rows) == (3, 3) and b["decoder_input"].shape == b["loss_weights"].shape == (3, 3, u)
        assert b["features"].shape[0] == 3 and b["features"].shape[2] == 80
        assert (b["features"].shape[1], u) in batches.shapes
        for r in range(rows):
            k = b["index"][r]
            if k < 0:
                assert b["valid"][r] == 0 and not b["loss_weights"][:, r].any()
                continue
            seen.append(int(k))
            utt = batches.utterances[k]
            for li, lang in enumerate(LANGS):
                ids = vocab.encode(utt["references"][lang], lang)
                np.testing.assert_array_equal(b["target"][li, r, : len(ids)], ids)
                np.testing.assert_array_equal(b["decoder_input"][li, r, : len(ids)], [2] + ids[:-1])
                assert (b["target"][li, r, len(ids):] == 1).all()
                np.testing.assert_array_equal(b["loss_weights"][li, r],
                                              [0] + [1] * (len(ids) - 1) + [0] * (u - len(ids)))
                assert sources[lang][utt["examples"][lang]]["tgt_text"].decode() == utt["references"][lang]
            audio = sources["de"][utt["examples"]["de"]]["audio"]
            want = np.asarray(fbank(audio.astype(np.float32) / 32768, 16000))
            length = b["feature_lengths"][r]
            assert length == len(want)
            np.testing.assert_allclose(b["features"][r, :length], utterance_cmvn(want), atol=1e-3)
            assert not b["features"][r, length:].any()
        for key, value in batches[i].items():  # random access gives the same batch
            np.testing.assert_array_equal(value, b[key])
    assert sorted(seen) == list(range(4))
    assert len(make_multiway_pipeline(sources, vocab, CFG, 4, max_utterances=3).utterances) == 3
    with pytest.raises(IndexError):
        batches[len(batches)]


def test_unaligned_and_audio_matching(corpus, caplog):
    _, data, vocab = corpus
    sources = tfds_sources(data, "tst-COMMON")
    es = [sources["es"][i] for i in range(len(sources["es"]))]
    gone = es.pop(2)
    batches = make_multiway_pipeline({**sources, "es": es}, vocab, CFG, 4)
    assert batches.stats.dropped_by_lang == {"de": {"unaligned": 1, "too_long": 0, "too_short": 0},
                                             "es": {"unaligned": 0, "too_long": 0, "too_short": 0},
                                             "fr": {"unaligned": 1, "too_long": 0, "too_short": 0}}
    assert "unaligned per stream" in caplog.text
    assert len(batches.utterances) == 3 and gone["id"].decode() not in {u["ids"]["de"] for u in batches.utterances}
    for u in batches.utterances:
        for lang in LANGS:
            ex = (es if lang == "es" else sources[lang])[u["examples"][lang]]
            assert ex["id"].decode() == u["ids"][lang] and ex["tgt_text"].decode() == u["references"][lang]

    # the same talk, transcript and length but other samples: aligned unless the audio must match
    fr = [dict(sources["fr"][i]) for i in range(len(sources["fr"]))]
    fr[1]["audio"] = fr[1]["audio"][::-1].copy()
    assert len(make_multiway_pipeline({**sources, "fr": fr}, vocab, CFG, 4).utterances) == 4
    matched = make_multiway_pipeline({**sources, "fr": fr}, vocab, CFG, 4, match_audio=True)
    assert len(matched.utterances) == 3 and matched.stats.dropped_by_lang["fr"]["unaligned"] == 1

    with pytest.raises(ValueError, match="unknown target language 'xx'"):
        make_multiway_pipeline(sources, vocab, replace(CFG, langs=("de", "es"), targets=("de", "xx")), 4)
    with pytest.raises(ValueError, match="no multi-way aligned"):
        make_multiway_pipeline({**sources, "es": es[:0]}, vocab, CFG, 4)


def test_waveform_multiway_batches(corpus):
    _, data, vocab = corpus
    sources = tfds_sources(data, "dev")
    cfg = replace(CFG, features="waveform", specaugment=None, cmvn=None, max_frames=96000,
                  frame_buckets=(96000,), source_tokens=32)
    batches = make_multiway_pipeline(sources, vocab, cfg, 4, frame_multiple=1000)
    (b,) = list(batches)
    assert b["valid"].all() and batches.shapes == [(b["features"].shape[1], b["target"].shape[2])]
    assert b["features"].shape[0] == 4 and b["features"].ndim == 2 and b["features"].shape[1] % 1000 == 0
    assert b["target"].shape[:2] == (3, 4) and b["src_tokens"].shape == (4, 32)
    truncated = 0
    for r, i in enumerate(b["index"]):
        u = batches.utterances[i]
        ex = sources["de"][u["examples"]["de"]]
        n = len(ex["audio"])
        assert b["feature_lengths"][r] == n
        np.testing.assert_array_equal(b["features"][r, :n], ex["audio"].astype(np.float32) / 32768)
        src = vocab.encode(u["src_text"], "en")
        truncated += len(src) > 32
        src = src if len(src) <= 32 else src[:31] + [2]  # [<lang:en>, pieces..., </s>] within 32 tokens
        np.testing.assert_array_equal(b["src_tokens"][r], src + [1] * (32 - len(src)))
        for li, lang in enumerate(LANGS):
            ids = vocab.encode(u["references"][lang], lang)
            np.testing.assert_array_equal(b["target"][li, r, : len(ids)], ids)
    assert truncated and batches.stats.src_truncated == {"de": truncated}
