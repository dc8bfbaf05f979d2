"""Text-only streams in speech batches (text_streams): metadata, filtering, sampling, planning in the smallest
frame bucket, the ``speech`` row mask, and the errors."""
from dataclasses import replace

import numpy as np
import pytest

from mlst_jax.data.pipeline import SourceMeta, epoch_sizes, make_eval_pipeline, make_train_pipeline, scan_source

from mlst_jax.data.batch_shapes import PipelineConfig
from mlst_jax.data.text_sources import ConcatSource, read_bitext
from mlst_jax.data.vocab import EOS_ID, PAD_ID
from text_words import LONG, word_vocab, words

STREAMS, TARGETS = ("fr-en", "mt"), ("en", "en")
CFG = PipelineConfig(features="waveform", specaugment=None, cmvn=None, max_frames=2000, min_frames=100,
                     frame_buckets=(500, 1000, 2000), max_frames_per_batch=8000, token_buckets=(8, 16, 32),
                     max_tokens=32, source_tokens=16, langs=STREAMS, targets=TARGETS, text_streams=("mt",),
                     read_threads=0)
SPEECH_LENGTHS = [150, 300, 420, 499, 350, 460, 600, 800, 1000, 700, 1200, 1500, 1800, 2000]  # samples
# speech examples dropped, one per reason: (samples, source, target)
BAD_SPEECH = [(2500, "un", "one"), (80, "un", "one"), (400, "un", ""), (400, "un", LONG), (400, "", "one"),
              (400, LONG, "one")]
# text examples dropped, one per reason: (source, target)
BAD_TEXT = [("alpha", ""), ("alpha", LONG), ("", "alpha"), (LONG, "alpha")]


def utterance(n, src, tgt, rng):
    pcm = 3000 * np.sin(np.arange(n) / 3) + 800 * rng.standard_normal(n)
    return dict(audio=np.round(pcm).astype(np.int16), src_text=src.encode(), src_lang=b"fr", tgt_text=tgt.encode(),
                tgt_lang=b"en", id=b"x")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return word_vocab(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    rng = np.random.default_rng(1)
    speech = [utterance(n, words(rng, 1, 4), words(rng, 1, 4), rng) for n in SPEECH_LENGTHS]
    speech += [utterance(n, s, t, rng) for n, s, t in BAD_SPEECH]
    path = tmp_path_factory.mktemp("bitext") / "news.de-en"
    path.write_text("".join(f"{words(rng, 1, 6)}\t{words(rng, 1, 6)}\n" for _ in range(30)), encoding="utf-8")
    bad = [dict(src_text=s, tgt_text=t, src_lang="de", tgt_lang="en", id="bad", talk="", speaker="")
           for s, t in BAD_TEXT]
    return {"fr-en": speech, "mt": ConcatSource(read_bitext(path, "de", "en"), bad)}


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def epoch(pipe):
    return [next(pipe) for _ in range(pipe.steps_per_epoch)]


def rows(b):
    """(stream id, row index tuple) of every valid row, stratified or not."""
    ids = b["group_lang"][:, None].repeat(b["valid"].shape[1], 1) if "group_lang" in b else b["lang"]
    return [(int(ids[r]), r) for r in zip(*np.nonzero(b["valid"]))]


def check_batch(b, sources, vocab, cfg):
    """Rows of a batch: text rows without features, speech rows with their samples, padding rows empty."""
    lead = b["valid"].shape
    assert b["speech"].shape == lead and b["speech"].dtype == np.int32
    assert b["src_tokens"].shape == (*lead, cfg.source_tokens)
    n_max = b["features"].shape[-1]
    for sid, r in rows(b):
        ex = sources[STREAMS[sid]][b["index"][r]]
        src, tgt = vocab.encode(text(ex["src_text"]), text(ex["src_lang"])), vocab.encode(text(ex["tgt_text"]), "en")
        np.testing.assert_array_equal(b["src_tokens"][r], src + [PAD_ID] * (cfg.source_tokens - len(src)))
        np.testing.assert_array_equal(b["target"][r][: len(tgt)], tgt)
        np.testing.assert_array_equal(b["decoder_input"][r][: len(tgt)], [EOS_ID] + tgt[:-1])
        assert b["loss_weights"][r].sum() == len(tgt) - 1
        if STREAMS[sid] == "mt":
            assert b["speech"][r] == 0 and b["feature_lengths"][r] == 0 and not b["features"][r].any()
            assert n_max == cfg.frame_buckets[0]  # text rows are planned in the smallest frame bucket
        else:
            n = len(ex["audio"])
            assert b["speech"][r] == 1 and b["feature_lengths"][r] == n
            np.testing.assert_array_equal(b["features"][r][:n], ex["audio"].astype(np.float32) / 32768)
            assert not b["features"][r][n:].any()
    pad = b["valid"] == 0
    assert not b["speech"][pad].any() and not b["features"][pad].any() and (b["index"][pad] == -1).all()
    assert (b["src_tokens"][pad] == PAD_ID).all()


def test_text_rows_beside_speech_rows(sources, vocab):
    pipe = make_train_pipeline(sources, vocab, CFG)
    speech, mt = pipe.stats.dropped_by_lang["fr-en"], pipe.stats.dropped_by_lang["mt"]
    assert +speech == {r: 1 for r in ("too_long", "too_short", "empty_target", "target_too_long", "empty_source",
                                      "source_too_long")}
    # no feature-length filter on text streams: their 0 feature steps are not too_short
    assert +mt == {"empty_target": 1, "target_too_long": 1, "empty_source": 1, "source_too_long": 1}
    assert "too_short" not in mt and "too_long" not in mt
    assert pipe.stats.kept == {"fr-en": 14, "mt": 30}
    assert [s.features for s in pipe.batch_shapes()] == [(2, 8, 500), (2, 4, 1000), (2, 2, 2000)]
    seen = []
    for b in epoch(pipe):
        assert any(b["features"].shape == s.features and b["target"].shape == s.tokens for s in pipe.batch_shapes())
        check_batch(b, sources, vocab, CFG)
        seen += [(sid, int(b["index"][r])) for sid, r in rows(b)]
    assert sorted(seen) == [(0, i) for i in range(14)] + [(1, i) for i in range(30)]  # T = 1: each once

    # unstratified batches put text rows and short utterances in the same rows of one batch
    flat = make_train_pipeline(sources, vocab, replace(CFG, stratify=False, cmvn="utterance"))
    mixed = 0
    for b in epoch(flat):
        assert b["speech"].shape == b["lang"].shape == b["valid"].shape
        text_rows = (b["valid"] == 1) & (b["lang"] == 1)
        assert not b["features"][text_rows].any() and not b["feature_lengths"][text_rows].any()
        assert (b["speech"] == ((b["valid"] == 1) & (b["lang"] == 0))).all()
        mixed += bool(text_rows.any() and b["speech"].any())
    assert mixed


def test_sampling_with_temperature(sources, vocab):
    for temperature in (2.0, float("inf")):
        pipe = make_train_pipeline(sources, vocab, replace(CFG, temperature=temperature))
        want = epoch_sizes([14, 30], temperature)
        assert pipe.stats.epoch_examples == dict(zip(STREAMS, want.tolist()))
        counts = np.zeros(2)
        for b in epoch(pipe):
            for sid, _ in rows(b):
                counts[sid] += 1
        assert counts[1] == want[1]  # one cell: exactly its epoch size
        assert abs(counts[0] - want[0]) <= 1  # rounded per frame bucket
    assert abs(want[0] - want[1]) <= 1  # uniform at T = inf


def test_no_speech_key_without_text_streams_and_in_evaluation(sources, vocab):
    cfg = replace(CFG, langs=("fr-en",), targets=("en",), text_streams=())
    b = next(make_train_pipeline({"fr-en": sources["fr-en"]}, vocab, cfg))
    assert "speech" not in b and "src_tokens" in b
    evaluated = list(make_eval_pipeline(sources["fr-en"], vocab, CFG, batch_size=8, lang="en"))
    assert all("speech" not in b for b in evaluated)
    assert sum(int(b["valid"].sum()) for b in evaluated) == 20


def test_text_streams_are_independent_of_processes(sources, vocab):
    whole = make_train_pipeline(sources, vocab, replace(CFG, max_frames_per_batch=16000), num_devices=2)
    shards = [make_train_pipeline(sources, vocab, CFG, shard_index=s, shard_count=2) for s in (0, 1)]
    for _ in range(whole.steps_per_epoch):
        x, (a, b) = next(whole), [next(p) for p in shards]
        assert "speech" in x
        for key in x:
            joined = a[key] if key == "group_lang" else np.concatenate([a[key], b[key]], axis=1)
            np.testing.assert_array_equal(x[key], joined, err_msg=key)


def test_fbank_pipeline_with_a_text_stream(sources, vocab):
    rng = np.random.default_rng(2)
    speech = [dict(fbank=rng.standard_normal((f, 80)).astype(np.float16), src_text=b"un deux", src_lang=b"fr",
                   tgt_text=b"one two", tgt_lang=b"en", id=b"x") for f in rng.integers(5, 65, 12)]
    cfg = PipelineConfig(max_frames=64, frame_buckets=(16, 32, 48, 64), max_frames_per_batch=384,
                         token_buckets=(8, 16, 32), max_tokens=32, source_tokens=16, ctc_max_chars=20, langs=STREAMS,
                         targets=TARGETS, text_streams=("mt",), read_threads=0)  # SpecAugment, utterance CMVN
    pipe = make_train_pipeline({"fr-en": speech, "mt": sources["mt"]}, vocab, cfg)
    n_text = n_speech = 0
    for b in epoch(pipe):
        for sid, r in rows(b):
            if sid == 1:
                assert b["speech"][r] == 0 and b["feature_lengths"][r] == 0 and not b["features"][r].any()
                assert b["ctc_label_paddings"][r].all()  # no CTC labels without audio
                n_text += 1
            else:
                ex = speech[b["index"][r]]
                assert b["speech"][r] == 1 and b["feature_lengths"][r] == len(ex["fbank"])
                assert b["features"][r].any() and not b["ctc_label_paddings"][r].all()
                n_speech += 1
    assert (n_speech, n_text) == (12, 30)


def test_text_only_metadata(sources, vocab, tmp_path):
    meta = scan_source(sources["mt"], vocab, "en", features="waveform", source_tokens=True, text_only=True)
    src = [len(vocab.encode(text(sources["mt"][i]["src_text"]), "de")) for i in range(34)]
    tgt = [len(vocab.encode(text(sources["mt"][i]["tgt_text"]), "en")) for i in range(34)]
    assert meta.kind == "text" and meta.features == "waveform" and not meta.n_frames.any()
    assert list(meta.n_src_tokens) == src and list(meta.n_tokens) == tgt
    meta.save(tmp_path / "mt.npz")
    back = SourceMeta.load(tmp_path / "mt.npz")
    assert back.kind == "text" and back.features == "waveform" and np.array_equal(back.n_src_tokens, meta.n_src_tokens)
    pipe = make_train_pipeline(sources, vocab, CFG, metadata={"mt": back})
    assert pipe.stats.kept == {"fr-en": 14, "mt": 30}


def test_errors(sources, vocab):
    for bad in (dict(source_tokens=0), dict(features="fbank", source_tokens=0)):
        with pytest.raises(ValueError, match=r"text_streams=\('mt',\).*source_tokens > 0"):
            replace(CFG, **bad)
    with pytest.raises(ValueError, match="text_streams=.*features 'fbank' or 'waveform'"):
        PipelineConfig(features="text", specaugment=None, cmvn=None, text_streams=("mt",))
    with pytest.raises(ValueError, match=r"text_streams \['de-en'\] are not streams"):
        make_train_pipeline(sources, vocab, replace(CFG, text_streams=("de-en",)))
    # a speech stream whose source is text-only
    with pytest.raises(ValueError, match="stream 'mt': example has neither 'audio' nor 'fbank'.*text_streams"):
        make_train_pipeline(sources, vocab, replace(CFG, text_streams=()))
    # a text stream whose metadata is not text-only, a speech stream whose metadata is
    audio_meta = scan_source(sources["fr-en"], vocab, "en", features="waveform", source_tokens=True)
    text_meta = scan_source(sources["fr-en"], vocab, "en", features="waveform", source_tokens=True, text_only=True)
    with pytest.raises(ValueError, match="fr-en is a text stream.*not text-only \\(audio source\\)"):
        make_train_pipeline(sources, vocab, replace(CFG, text_streams=("fr-en", "mt")), metadata={"fr-en": audio_meta})
    with pytest.raises(ValueError, match="metadata for fr-en is text-only"):
        make_train_pipeline(sources, vocab, CFG, metadata={"fr-en": text_meta})
    with pytest.raises(ValueError, match="metadata for mt counts frames"):
        make_train_pipeline(sources, vocab, CFG, metadata={
            "mt": scan_source(sources["mt"], vocab, "en", source_tokens=True, text_only=True)})
    # evaluation sources hold audio
    with pytest.raises(ValueError, match=r"eval source \(en\): example has neither 'audio'"):
        make_eval_pipeline(sources["mt"], vocab, CFG, lang="en")
    with pytest.raises(ValueError, match=r"metadata for eval source \(en\) is text-only"):
        make_eval_pipeline(sources["fr-en"], vocab, CFG, lang="en", metadata=text_meta)
    with pytest.raises(ValueError, match="text_only=True scans text-only sources for speech features"):
        scan_source(sources["mt"], vocab, "en", features="text", text_only=True)
