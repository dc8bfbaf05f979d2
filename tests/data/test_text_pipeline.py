"""Text batches (features="text"): source tokens as the input, filtering in source tokens, denoising noise on
chosen streams, evaluation; text-only sources (bitext files, transcripts as targets, concatenation)."""
import collections
import re
from dataclasses import replace

import numpy as np
import pytest

from mlst_jax.data.batch_loader import _span_mask
from mlst_jax.data.pipeline import SourceMeta, make_eval_pipeline, make_train_pipeline, scan_source

from mlst_jax.data.batch_shapes import PipelineConfig
from mlst_jax.data.text_sources import ConcatSource, TranscriptTargets, read_bitext
from mlst_jax.data.vocab import EOS_ID, PAD_ID, UNK_ID
from text_words import LONG, word_vocab, words

STREAMS, TARGETS = ("de-en", "en-en"), ("en", "en")
CFG = PipelineConfig(features="text", specaugment=None, cmvn=None, langs=STREAMS, targets=TARGETS, min_frames=1,
                     max_frames=32, frame_buckets=(8, 16, 32), max_frames_per_batch=128, token_buckets=(8, 16, 32),
                     max_tokens=32, read_threads=0)
NOISY = replace(CFG, noise_streams=("en-en",))


class Poison:
    """An audio field that fails when read."""

    def __len__(self):
        raise AssertionError("audio read")

    def __array__(self, *args, **kwargs):
        raise AssertionError("audio decoded")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return word_vocab(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("bitext") / "news.de-en"
    path.write_text("".join(f"{words(rng, 1, 6)}\t{words(rng, 1, 6)}\n" for _ in range(10)), encoding="utf-8")
    mt = [dict(src_text=words(rng, 1, 6).encode(), src_lang=b"de", tgt_text=words(rng, 1, 6).encode(),
               tgt_lang=b"en", audio=Poison(), id=b"x") for _ in range(20)]
    # one per filter reason: empty source, source too long, empty target, target too long
    mt += [dict(mt[0], src_text=s.encode(), tgt_text=t.encode()) for s, t in
           [("", "alpha"), (LONG, "alpha"), ("alpha", ""), ("alpha", LONG)]]
    speech = [dict(src_text=words(rng, 6, 22).encode(), src_lang=b"en", tgt_text=b"eins", tgt_lang=b"de",
                   audio=Poison(), id=b"y") for _ in range(24)]
    return {"de-en": ConcatSource(read_bitext(path, "de", "en"), mt), "en-en": TranscriptTargets(speech)}


def epoch(pipe):
    return [next(pipe) for _ in range(pipe.steps_per_epoch)]


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def valid_rows(b):
    """(stream id, group, row) of every valid row of a stratified batch."""
    return [(int(b["group_lang"][g]), g, r) for g, r in zip(*np.nonzero(b["valid"]))]


def test_text_batches_hold_source_and_target_tokens(sources, vocab):
    pipe = make_train_pipeline(sources, vocab, CFG)
    assert pipe.stats.dropped == {"empty_source": 1, "too_long": 1, "empty_target": 1, "target_too_long": 1}
    assert pipe.stats.dropped_by_lang["de-en"]["empty_source"] == 1
    assert pipe.stats.kept == {"de-en": 30, "en-en": 24}
    # rows = max_frames_per_batch // T source tokens, in whole rows per group of the 2 streams
    assert [s.features for s in pipe.batch_shapes()] == [(2, 8, 8), (2, 4, 16), (2, 2, 32)]
    seen = []
    for b in epoch(pipe):
        assert "features" not in b and "ctc_labels" not in b
        g, rows, t = b["src_tokens"].shape
        assert b["src_tokens"].dtype == np.int32 and b["feature_lengths"].dtype == np.int32
        assert g * rows * t <= CFG.max_frames_per_batch and b["feature_lengths"].shape == (g, rows)
        assert b["target"].shape[:2] == (g, rows)
        for sid, gi, r in valid_rows(b):
            ex = sources[STREAMS[sid]][b["index"][gi, r]]
            src = vocab.encode(text(ex["src_text"]), text(ex["src_lang"]))
            tgt = vocab.encode(text(ex["tgt_text"]), TARGETS[sid])
            assert src[0] == vocab.lang_id(text(ex["src_lang"])) and src[-1] == EOS_ID
            assert b["feature_lengths"][gi, r] == len(src) and t == min(x for x in CFG.frame_buckets if x >= len(src))
            np.testing.assert_array_equal(b["src_tokens"][gi, r], src + [PAD_ID] * (t - len(src)))
            np.testing.assert_array_equal(b["target"][gi, r, : len(tgt)], tgt)
            np.testing.assert_array_equal(b["decoder_input"][gi, r, : len(tgt)], [EOS_ID] + tgt[:-1])
            assert b["loss_weights"][gi, r].sum() == len(tgt) - 1
            seen.append((sid, int(b["index"][gi, r])))
        pad = b["valid"] == 0
        assert (b["src_tokens"][pad] == PAD_ID).all() and not b["feature_lengths"][pad].any()
        assert (b["index"][pad] == -1).all()
    assert sorted(seen) == [(0, i) for i in range(30)] + [(1, i) for i in range(24)]
    # the denoising stream's targets are its transcripts, in the transcript's language
    ex = sources["en-en"][0]
    assert ex["tgt_text"] == ex["src_text"] and ex["tgt_lang"] == b"en"


def test_min_frames_counts_source_tokens_and_metadata(sources, vocab, tmp_path):
    meta = scan_source(sources["de-en"], vocab, "en", features="text")
    lengths = [len(vocab.encode(text(ex["src_text"]), "de")) for ex in (sources["de-en"][i] for i in range(34))]
    assert meta.kind == "text" and meta.features == "text" and list(meta.n_frames) == lengths
    np.testing.assert_array_equal(meta.n_src_tokens, lengths)
    meta.save(tmp_path / "de-en.npz")
    back = SourceMeta.load(tmp_path / "de-en.npz")
    assert back.features == "text" and np.array_equal(back.n_frames, meta.n_frames)
    lengths = np.array(lengths)
    pipe = make_train_pipeline(sources, vocab, replace(CFG, min_frames=5), metadata={"de-en": back})
    assert pipe.stats.dropped_by_lang["de-en"]["too_short"] == np.count_nonzero((lengths > 2) & (lengths < 5))
    with pytest.raises(ValueError, match="metadata for de-en counts frames.*needs source tokens"):
        make_train_pipeline(sources, vocab, CFG, metadata={"de-en": replace(meta, features="fbank")})
    with pytest.raises(ValueError, match="cannot hold one sentence of 32 source tokens"):
        make_train_pipeline(sources, vocab, replace(CFG, max_frames_per_batch=32))


def test_config_errors(sources, vocab):
    base = dict(features="text", specaugment=None, cmvn=None)
    for field, value in [("specaugment", "ld"), ("cmvn", "utterance"), ("cmvn", "global"), ("source_tokens", 8),
                         ("ctc_max_chars", 40)]:
        with pytest.raises(ValueError, match=f"{field}=.*features='text'"):
            PipelineConfig(**{**base, field: value, "global_cmvn_path": "g.npz"})
    with pytest.raises(ValueError, match="noise_streams.*features='text'"):
        PipelineConfig(noise_streams=("de",))
    with pytest.raises(ValueError, match="noise_ratio"):
        replace(NOISY, noise_ratio=1.5)
    with pytest.raises(ValueError, match="features must be 'fbank', 'waveform' or 'text'"):
        replace(CFG, features="mfcc")
    with pytest.raises(ValueError, match=r"noise_streams \['fr-en'\] are not streams"):
        make_train_pipeline(sources, vocab, replace(CFG, noise_streams=("fr-en",)))


def test_eval_text_batches_are_never_noised(sources, vocab):
    clean = list(make_eval_pipeline(sources["en-en"], vocab, CFG, batch_size=4, lang="en"))
    noisy = list(make_eval_pipeline(sources["en-en"], vocab, replace(NOISY, langs=("en-en",), targets=("en",)),
                                    batch_size=4, lang="en"))
    seen = []
    for b, n in zip(clean, noisy):
        assert "features" not in b and b.keys() == n.keys()
        assert all(np.array_equal(b[k], n[k]) for k in b)
        for r in np.flatnonzero(b["valid"]):
            ex = sources["en-en"][b["index"][r]]
            src = vocab.encode(ex["src_text"].decode(), "en")
            np.testing.assert_array_equal(b["src_tokens"][r, : len(src)], src)
            assert b["feature_lengths"][r] == len(src) and (b["src_tokens"][r, len(src):] == PAD_ID).all()
            np.testing.assert_array_equal(b["target"][r, : len(src)], vocab.encode(ex["src_text"].decode(), "en"))
            seen.append(int(b["index"][r]))
    assert sorted(seen) == list(range(24))
    # evaluation keeps every example, an empty or a long source too (past the last bucket: a multiple of the first)
    mt = list(make_eval_pipeline(sources["de-en"], vocab, CFG, batch_size=8, lang="en"))
    assert sum(int(b["valid"].sum()) for b in mt) == 34 and mt[0]["src_tokens"].shape[1] % 8 == 0


def masked_pieces(clean, noised, mask_id=UNK_ID):
    """Checks that ``noised`` is ``clean`` with runs of pieces replaced by one mask each; returns how many."""
    assert noised[0] == clean[0] and noised[-1] == clean[-1] == EOS_ID and UNK_ID not in clean
    pattern = "".join("(?:\\d+,)+" if x == mask_id else f"{x}," for x in noised[1:-1])
    assert re.fullmatch(pattern, "".join(f"{x}," for x in clean[1:-1])), (clean, noised)
    assert not any(a == b == mask_id for a, b in zip(noised, noised[1:]))
    return len(clean) - 2 - sum(1 for x in noised[1:-1] if x != mask_id)


def test_noise_masks_spans_of_the_chosen_streams(sources, vocab):
    clean, noisy = make_train_pipeline(sources, vocab, CFG), make_train_pipeline(sources, vocab, NOISY)
    counts = collections.Counter()
    for a, b in zip(epoch(clean) + epoch(clean), epoch(noisy) + epoch(noisy)):
        for key in a:
            if key not in ("src_tokens", "feature_lengths"):
                np.testing.assert_array_equal(a[key], b[key])
        for sid, gi, r in valid_rows(a):
            src, n = a["src_tokens"][gi, r, : a["feature_lengths"][gi, r]], b["feature_lengths"][gi, r]
            noised = b["src_tokens"][gi, r]
            assert (noised[n:] == PAD_ID).all()
            if STREAMS[sid] == "de-en":
                np.testing.assert_array_equal(noised, a["src_tokens"][gi, r])
                continue
            masked = masked_pieces(list(src), list(noised[:n]))
            assert masked == np.floor(0.35 * (len(src) - 2) + 0.5)
            counts["masked"] += masked
            counts["pieces"] += len(src) - 2
            counts["changed"] += list(noised[:n]) != list(src)
    assert counts["changed"] == 48 and abs(counts["masked"] / counts["pieces"] - 0.35) < 0.03


def test_span_mask_ratio_and_spans():
    rng = np.random.default_rng(0)
    masked = pieces = spans = 0
    for _ in range(200):
        ids = np.array([250, *rng.integers(10, 200, int(rng.integers(20, 60))), EOS_ID])
        out = _span_mask(ids, rng, 0.35, 2.0, UNK_ID)
        masked += masked_pieces(list(ids), list(out))
        pieces += len(ids) - 2
        spans += int((out == UNK_ID).sum())
    assert abs(masked / pieces - 0.35) < 0.01 and 1.6 < masked / spans < 3.0  # merged Poisson(2) spans, >= 1
    ids = np.array([250, 11, 12, 13, EOS_ID])
    np.testing.assert_array_equal(_span_mask(ids, rng, 0.0, 2.0, UNK_ID), ids)
    np.testing.assert_array_equal(_span_mask(ids, rng, 1.0, 2.0, 7), [250, 7, EOS_ID])


def test_noise_is_restored_with_the_state_and_independent_of_processes(sources, vocab):
    first = make_train_pipeline(sources, vocab, NOISY)
    head = [next(first) for _ in range(3)]
    state = first.get_state()
    tail = [next(first) for _ in range(first.steps_per_epoch)]  # crosses into epoch 1
    restored = make_train_pipeline(sources, vocab, NOISY)
    restored.set_state(state)
    for x, y in zip(tail, [next(restored) for _ in range(len(tail))]):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    assert any(not np.array_equal(x["src_tokens"], y["src_tokens"])
               for x, y in zip(head, [next(make_train_pipeline(sources, vocab, replace(NOISY, seed=1)))]))
    whole = make_train_pipeline(sources, vocab, replace(NOISY, max_frames_per_batch=256), num_devices=2)
    shards = [make_train_pipeline(sources, vocab, NOISY, shard_index=s, shard_count=2) for s in (0, 1)]
    for _ in range(whole.steps_per_epoch):
        x, (a, b) = next(whole), [next(p) for p in shards]
        for key in x:
            joined = a[key] if key == "group_lang" else np.concatenate([a[key], b[key]], axis=1)
            np.testing.assert_array_equal(x[key], joined, err_msg=key)


# -- text sources ----------------------------------------------------------------------------------

def test_read_bitext(tmp_path):
    path = tmp_path / "talks.fr-en"
    path.write_bytes("\ufeffun deux\tone two\r\ntrois\tthree\n".encode())
    assert read_bitext(path, "fr", "en") == [
        dict(id="talks:1", src_lang="fr", tgt_lang="en", src_text="un deux", tgt_text="one two", talk="", speaker=""),
        dict(id="talks:2", src_lang="fr", tgt_lang="en", src_text="trois", tgt_text="three", talk="", speaker="")]
    for content, message in [(b"a\tb\nc d\n", "found 0 tabs"), (b"a\tb\na\tb\tc\n", "found 2 tabs"),
                             (b"a\tb\n\tb\n", "empty source"), (b"a\tb\na\t \n", "empty target"),
                             (b"a\tb\n\xff\tb\n", "not UTF-8")]:
        path.write_bytes(content)
        with pytest.raises(ValueError, match=f"{re.escape(str(path))}:2: .*{message}"):
            read_bitext(path, "fr", "en")
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: empty bitext file"):
        read_bitext(path, "fr", "en")


def test_transcript_targets_and_concat_source():
    speech = [dict(src_text=b"un", src_lang=b"fr", tgt_text=b"one", tgt_lang=b"en", audio=np.zeros(3, np.int16)),
              dict(src_text=b"deux", src_lang=b"fr", tgt_text=b"two", tgt_lang=b"en", audio=np.ones(3, np.int16))]
    view = TranscriptTargets(speech)
    assert len(view) == 2 and view[1]["tgt_text"] == b"deux" and view[1]["tgt_lang"] == b"fr"
    assert view[1]["src_text"] == b"deux" and view[1]["audio"] is speech[1]["audio"]
    assert speech[1]["tgt_text"] == b"two"  # the source is unchanged
    with pytest.raises(ValueError, match=r"example 0 has no \['src_lang'\]"):
        TranscriptTargets([dict(src_text=b"un", tgt_text=b"one")])[0]
    both = ConcatSource(["a", "b"], [], ["c"], view)
    assert len(both) == 5 and [both[i] for i in range(3)] == ["a", "b", "c"] and both[np.int64(4)] == view[1]
    assert both[-5] == "a" and both[-1] == view[1] and len(ConcatSource()) == 0
    for i in (5, -6):
        with pytest.raises(IndexError, match="out of range"):
            both[i]
