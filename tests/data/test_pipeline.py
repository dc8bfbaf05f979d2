"""Grain input pipeline: filtering, static shapes, stratification, sampling, sharding, state, features (fbank and
waveform), streams with their own target language, source tokens."""
import collections
from dataclasses import replace

import numpy as np
import pytest

from mlst_jax.audio import GlobalCMVN, fbank, utterance_cmvn
from mlst_jax.data.pipeline import SourceMeta, epoch_sizes, language_probs, make_eval_pipeline, make_train_pipeline, scan_source
from mlst_jax.data.batch_shapes import PipelineConfig, static_batch_shapes
from mlst_jax.data.tfds_builders import MustC, prepare
from mlst_jax.data.vocab import EOS_ID, PAD_ID, train_vocab
from mlst_jax.data.writers import Talk, write_mustc

WORDS = "alpha beta gamma delta eins zwei drei uno dos tres un deux trois".split()
LANGS = ("de", "es", "fr")
SIZES = {"de": 60, "es": 30, "fr": 10}
CFG = PipelineConfig(max_frames=64, min_frames=5, frame_buckets=(16, 32, 48, 64), max_frames_per_batch=384,
                     token_buckets=(8, 16, 32), max_tokens=32, read_threads=0)
# de's extra examples, one per filter reason: (frames, text)
BAD = [(80, "alpha beta"), (3, "alpha"), (20, ""), (20, " ".join(WORDS * 3))]


def example(lang, frames, text, rng):
    return dict(fbank=rng.standard_normal((frames, 80)).astype(np.float16), n_frames=frames,
                tgt_lang=lang.encode(), tgt_text=text.encode(), id=b"x")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 4)) for _ in range(200)]
    return train_vocab(texts, tmp_path_factory.mktemp("vocab") / "spm", 60, LANGS)


@pytest.fixture(scope="module")
def sources():
    rng = np.random.default_rng(1)
    out = {}
    for lang, n in SIZES.items():
        out[lang] = [example(lang, int(rng.integers(5, 65)), " ".join(rng.choice(WORDS, int(rng.integers(1, 6)))), rng)
                     for _ in range(n)]
    out["de"] += [example("de", f, t, rng) for f, t in BAD]
    return out


def epoch(pipe):
    return [next(pipe) for _ in range(pipe.steps_per_epoch)]


def rows(batch):
    """(lang, index) of every valid row."""
    langs = np.broadcast_to(batch["group_lang"][:, None], batch["valid"].shape) if "group_lang" in batch \
        else batch["lang"]
    return [(int(l), int(i)) for l, i, v in zip(langs.ravel(), batch["index"].ravel(), batch["valid"].ravel()) if v]


def shape_of(batch):
    return batch["features"].shape, batch["target"].shape


def test_filtering_counts_and_logging(sources, vocab, caplog):
    pipe = make_train_pipeline(sources, vocab, CFG)
    assert pipe.stats.dropped == {"too_long": 1, "too_short": 1, "empty_target": 1, "target_too_long": 1}
    assert pipe.stats.dropped_by_lang["es"] == {r: 0 for r in pipe.stats.dropped}
    assert pipe.stats.kept == SIZES
    assert "too_long" in caplog.text
    seen = collections.Counter(r for b in epoch(pipe) for r in rows(b))
    assert set(seen.values()) == {1}  # T = 1: every kept example exactly once per epoch
    assert sorted(seen) == [(li, i) for li, l in enumerate(LANGS) for i in range(SIZES[l])]


def test_stratified_shapes_budget_groups_and_targets(sources, vocab):
    pipe = make_train_pipeline(sources, vocab, CFG)
    shapes = {tuple(s) for s in pipe.batch_shapes()}
    assert len(shapes) == 4
    for b in epoch(pipe) + epoch(pipe):
        assert shape_of(b) in shapes
        g, n, t, _ = b["features"].shape
        assert g == 3 and g * n * t <= CFG.max_frames_per_batch and b["group_lang"].shape == (3,)
        for gi, lang in enumerate(b["group_lang"]):
            src = sources[LANGS[lang]]
            for r in np.flatnonzero(b["valid"][gi]):
                ex = src[b["index"][gi, r]]
                ids = vocab.encode(ex["tgt_text"].decode(), LANGS[lang])  # group is single-language
                u = len(ids)
                np.testing.assert_array_equal(b["target"][gi, r, :u], ids)
                np.testing.assert_array_equal(b["decoder_input"][gi, r, :u], [EOS_ID] + ids[:-1])
                assert ids[0] == vocab.lang_id(LANGS[lang])
                np.testing.assert_array_equal(b["loss_weights"][gi, r], (np.arange(b["target"].shape[-1]) < u) *
                                              (np.arange(b["target"].shape[-1]) > 0))
                assert (b["target"][gi, r, u:] == PAD_ID).all() and (b["decoder_input"][gi, r, u:] == PAD_ID).all()
                assert b["feature_lengths"][gi, r] == ex["n_frames"]
                assert not b["features"][gi, r, ex["n_frames"]:].any()
            pad = b["valid"][gi] == 0
            assert (b["loss_weights"][gi][pad] == 0).all() and (b["feature_lengths"][gi][pad] == 0).all()
            assert (b["index"][gi][pad] == -1).all() and not b["features"][gi][pad].any()


def test_temperature_sampling(sources, vocab):
    sizes = np.array([60, 30, 10])
    np.testing.assert_allclose(language_probs(sizes, 1.0), sizes / 100)
    np.testing.assert_allclose(language_probs(sizes, float("inf")), [1 / 3] * 3)
    np.testing.assert_allclose(language_probs(sizes, 2.0), np.sqrt(sizes) / np.sqrt(sizes).sum())
    np.testing.assert_array_equal(epoch_sizes(sizes, float("inf")), [33, 33, 33])
    pipe = make_train_pipeline(sources, vocab, replace(CFG, temperature=float("inf")))
    counts = np.zeros(3)
    for _ in range(3):
        for b in epoch(pipe):
            for lang, _ in rows(b):
                counts[lang] += 1
    np.testing.assert_allclose(counts / counts.sum(), [1 / 3] * 3, atol=0.02)
    assert pipe.stats.epoch_examples == {"de": 33, "es": 33, "fr": 33}


def test_shards_disjoint_same_shapes(sources, vocab):
    a, b = (make_train_pipeline(sources, vocab, CFG, shard_index=s, shard_count=2) for s in (0, 1))
    assert a.steps_per_epoch == b.steps_per_epoch and a.batch_shapes() == b.batch_shapes()
    ea, eb = epoch(a), epoch(b)
    assert [shape_of(x) for x in ea] == [shape_of(x) for x in eb]
    assert all((x["group_lang"] == y["group_lang"]).all() for x, y in zip(ea, eb))
    ra, rb = {r for x in ea for r in rows(x)}, {r for x in eb for r in rows(x)}
    assert not ra & rb and len(ra | rb) == sum(SIZES.values())


def test_determinism_and_state_restore(sources, vocab):
    cfg = replace(CFG, specaugment="ld", temperature=3.0)
    first = make_train_pipeline(sources, vocab, cfg)
    k = first.steps_per_epoch - 2
    head = [next(first) for _ in range(k)]
    state = first.get_state()
    tail = [next(first) for _ in range(5)]  # crosses into epoch 1
    again = make_train_pipeline(sources, vocab, cfg)
    for x, y in zip(head, [next(again) for _ in range(k)]):
        assert x.keys() == y.keys() and all(np.array_equal(x[key], y[key]) for key in x)
    restored = make_train_pipeline(sources, vocab, cfg)
    restored.set_state(state)
    for x, y in zip(tail, [next(restored) for _ in range(5)]):
        assert all(np.array_equal(x[key], y[key]) for key in x)
    other = make_train_pipeline(sources, vocab, replace(cfg, seed=1))
    assert any(not np.array_equal(x["index"], next(other)["index"]) for x in head)


def test_unstratified_batches(sources, vocab):
    cfg = replace(CFG, stratify=False)
    pipe = make_train_pipeline(sources, vocab, cfg, num_devices=4)
    shapes = {tuple(s) for s in pipe.batch_shapes()}
    langs = set()
    for b in epoch(pipe):
        assert shape_of(b) in shapes and "group_lang" not in b
        n, t, _ = b["features"].shape
        assert n % 4 == 0 and n * t <= cfg.max_frames_per_batch and b["lang"].shape == (n,)
        langs |= set(b["lang"][b["valid"] == 1].tolist())
        for lang, i in rows(b):
            assert sources[LANGS[lang]][i]["tgt_lang"].decode() == LANGS[lang]
    assert langs == {0, 1, 2}


def test_bad_example_skipped_or_raised(sources, vocab):
    metadata = {l: scan_source(sources[l], vocab, l) for l in LANGS}
    fr = [ex if i != 3 else {**ex, "tgt_text": b"\xff\xfe"} for i, ex in enumerate(sources["fr"])]
    broken = {**sources, "fr": fr}
    pipe = make_train_pipeline(broken, vocab, CFG, metadata=metadata)
    seen = {r for b in epoch(pipe) for r in rows(b)}
    assert (2, 3) not in seen and len(seen) == sum(SIZES.values()) - 1 and pipe.stats.load_errors == {"fr": 1}
    strict = make_train_pipeline(broken, vocab, replace(CFG, on_bad_example="raise"),
                                 metadata=metadata)
    with pytest.raises(ValueError, match="fr example 3"):
        epoch(strict)


def test_eval_pipeline_and_global_cmvn(sources, vocab, tmp_path):
    stats = GlobalCMVN()
    for ex in sources["de"]:
        stats.update(ex["fbank"].astype(np.float32))
    stats.save(tmp_path / "gcmvn.npz")
    cfg = replace(CFG, cmvn="global", global_cmvn_path=str(tmp_path / "gcmvn.npz"))
    pipe = make_eval_pipeline(sources["de"], vocab, cfg, batch_size=8)
    batches = list(pipe)
    assert len(batches) == pipe.steps_per_epoch == -(-len(sources["de"]) // 8)
    shapes = {tuple(s) for s in pipe.batch_shapes()}
    seen = []
    for b in batches:
        assert shape_of(b) in shapes and b["features"].shape[0] == 8
        for r in np.flatnonzero(b["valid"]):
            ex = sources["de"][b["index"][r]]
            seen.append(int(b["index"][r]))
            n = ex["n_frames"]
            np.testing.assert_allclose(b["features"][r, :n], stats.apply(ex["fbank"].astype(np.float32)), atol=1e-5)
            assert not b["features"][r, n:].any()
    assert sorted(seen) == list(range(len(sources["de"]))) and pipe.stats.dropped == {}  # nothing filtered


# -- TFDS sources with audio ----------------------------------------------------------------------

def wave(n, seed):
    rng = np.random.default_rng(seed)
    x = 0.2 * np.sin(np.arange(n) * 2 * np.pi * (150 + 40 * seed) / 16000) + 0.05 * rng.standard_normal(n)
    return (np.round(x * 32768) / 32768).astype(np.float32)


@pytest.fixture(scope="module")
def tfds_sources(tmp_path_factory):
    root, data = tmp_path_factory.mktemp("mustc"), tmp_path_factory.mktemp("tfds")
    segs = [(wave(n, i), f"src {i}", {"de": " ".join(WORDS[i : i + 3]), "es": " ".join(WORDS[i + 1 : i + 3])})
            for i, n in enumerate([3000, 5200, 7000, 9000, 4100, 6100])]
    write_mustc(root, ["en-de", "en-es"], "train", [Talk("ted_1", "spk_1", segs[:3]), Talk("ted_2", "spk_2", segs[3:])])
    for pair in ("en-de", "en-es"):
        prepare("mustc", root, data, pair)
    return {p[3:]: MustC(config=p, data_dir=data).as_data_source("train") for p in ("en-de", "en-es")}


def test_audio_features_and_specaugment_train_only(tfds_sources, vocab):
    cfg = PipelineConfig(max_frames=64, frame_buckets=(64,), max_frames_per_batch=512, token_buckets=(8, 16),
                         max_tokens=16, shuffle=False, read_threads=0, specaugment=None)
    plain = epoch(make_train_pipeline(tfds_sources, vocab, cfg))
    augmented = epoch(make_train_pipeline(tfds_sources, vocab, replace(cfg, specaugment="ld")))
    n_rows = 0
    for b, a in zip(plain, augmented):
        for key in b:
            if key != "features":
                np.testing.assert_array_equal(a[key], b[key])
        for g, r in zip(*np.nonzero(b["valid"])):
            ex = tfds_sources[("de", "es")[b["group_lang"][g]]][b["index"][g, r]]
            expected = utterance_cmvn(fbank(ex["audio"].astype(np.float32) / 32768, 16000))
            n = len(expected)
            assert b["feature_lengths"][g, r] == n
            np.testing.assert_allclose(b["features"][g, r, :n], expected, rtol=1e-4, atol=1e-4)
            changed = a["features"][g, r] != b["features"][g, r]
            assert changed.any() and not changed[n:].any()
            np.testing.assert_allclose(a["features"][g, r][changed], b["features"][g, r, :n].mean(), atol=1e-5)
            n_rows += 1
    assert n_rows == 12
    evaluated = list(make_eval_pipeline(tfds_sources["de"], vocab, cfg, batch_size=4))
    for b in evaluated:
        for r in np.flatnonzero(b["valid"]):
            ex = tfds_sources["de"][b["index"][r]]
            expected = utterance_cmvn(fbank(ex["audio"].astype(np.float32) / 32768, 16000))
            np.testing.assert_allclose(b["features"][r, : len(expected)], expected, rtol=1e-4, atol=1e-4)
    assert sum(int(b["valid"].sum()) for b in evaluated) == 6


def test_metadata_roundtrip(sources, vocab, tmp_path):
    meta = scan_source(sources["es"], vocab, "es")
    meta.save(tmp_path / "es.npz")
    back = SourceMeta.load(tmp_path / "es.npz")
    assert back.kind == "fbank" and np.array_equal(back.n_frames, [ex["n_frames"] for ex in sources["es"]])
    assert np.array_equal(back.n_tokens, meta.n_tokens) and list(back.tgt_langs) == ["es"] * SIZES["es"]


def test_batches_do_not_depend_on_the_process_count(sources, vocab):
    cfg = replace(CFG, specaugment="ld", temperature=2.0)
    whole = make_train_pipeline(sources, vocab, replace(cfg, max_frames_per_batch=2 * cfg.max_frames_per_batch),
                                num_devices=2)
    shards = [make_train_pipeline(sources, vocab, cfg, shard_index=s, shard_count=2) for s in (0, 1)]
    for _ in range(whole.steps_per_epoch + 2):
        x, (a, b) = next(whole), [next(p) for p in shards]
        assert x["features"].shape[1] % 2 == 0  # rows per group split evenly over the 2 devices
        for key in x:
            joined = a[key] if key == "group_lang" else np.concatenate([a[key], b[key]], axis=1)
            np.testing.assert_array_equal(x[key], joined, err_msg=key)


# -- waveform features ----------------------------------------------------------------------------

WCFG = PipelineConfig(features="waveform", specaugment=None, cmvn=None, max_frames=2000, min_frames=100,
                      frame_buckets=(500, 1000, 2000), max_frames_per_batch=8000, token_buckets=(8, 16, 32),
                      max_tokens=32, read_threads=0)
# lengths in samples; 150 is kept (>= min_frames samples) although it is shorter than one fbank frame
WAVE_LENGTHS = {"de": [150, 400, 499, 500, 501, 777, 1000, 1001, 1500, 1999, 2000, 320, 2500, 80],
                "es": [260, 900, 1800]}


def audio_example(src, tgt, n, text, src_text, rng):
    pcm = 500 + 3000 * np.sin(np.arange(n) / (3 + rng.random())) + 800 * rng.standard_normal(n)
    return dict(audio=np.round(pcm).astype(np.int16), n_frames=n, tgt_lang=tgt.encode(), tgt_text=text.encode(),
                src_lang=src.encode(), src_text=src_text.encode(), id=b"x")


@pytest.fixture(scope="module")
def wave_sources():
    rng = np.random.default_rng(5)
    return {lang: [audio_example("fr", lang, n, " ".join(rng.choice(WORDS, 3)), "un deux", rng) for n in lengths]
            for lang, lengths in WAVE_LENGTHS.items()}


def hf_normalize(x):
    """transformers' Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm of one utterance."""
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def test_waveform_train_batches_in_samples(wave_sources, vocab):
    pipe = make_train_pipeline(wave_sources, vocab, WCFG)
    assert pipe.stats.dropped == {"too_long": 1, "too_short": 1}  # 2500 and 80 samples
    assert pipe.stats.kept == {"de": 12, "es": 3}
    # rows = max_frames_per_batch // N, in whole rows per group of the 2 streams
    assert [s.features for s in pipe.batch_shapes()] == [(2, 8, 500), (2, 4, 1000), (2, 2, 2000)]
    assert [s.features for s in static_batch_shapes(replace(WCFG, langs=("de", "es")))] == \
        [(2, 8, 500), (2, 4, 1000), (2, 2, 2000)]
    seen = []
    for b in epoch(pipe):
        g, rows, n_max = b["features"].shape
        assert b["features"].dtype == np.float32 and b["feature_lengths"].shape == (g, rows)
        for gi, r in zip(*np.nonzero(b["valid"])):
            lang = ("de", "es")[b["group_lang"][gi]]
            ex = wave_sources[lang][b["index"][gi, r]]
            n = len(ex["audio"])
            assert b["feature_lengths"][gi, r] == n and n_max == min(t for t in WCFG.frame_buckets if t >= n)
            np.testing.assert_array_equal(b["features"][gi, r, :n], ex["audio"].astype(np.float32) / 32768)
            assert not b["features"][gi, r, n:].any()
            seen.append(n)
        assert not b["features"][b["valid"] == 0].any() and not b["feature_lengths"][b["valid"] == 0].any()
    assert sorted(seen) == sorted(n for ls in WAVE_LENGTHS.values() for n in ls if 100 <= n <= 2000)


def test_waveform_utterance_normalization_in_eval(wave_sources, vocab):
    pipe = make_eval_pipeline(wave_sources["de"], vocab, replace(WCFG, cmvn="utterance"), batch_size=4, lang="de")
    # batches of the longest first (2500, 1001, 500 and 150 samples), each at the bucket holding its longest
    # (past the last bucket: a multiple of the first)
    assert [s.features for s in pipe.batch_shapes()] == [(4, 500), (4, 2000), (4, 2500)]
    seen = []
    for b, n_max in zip(pipe, (2500, 2000, 500, 500)):
        assert b["features"].shape == (4, n_max)
        for r in np.flatnonzero(b["valid"]):
            ex = wave_sources["de"][b["index"][r]]
            n = len(ex["audio"])
            assert b["feature_lengths"][r] == n
            np.testing.assert_allclose(b["features"][r, :n], hf_normalize(ex["audio"].astype(np.float32) / 32768),
                                       rtol=1e-6, atol=1e-6)
            assert not b["features"][r, n:].any()
            seen.append(int(b["index"][r]))
    assert sorted(seen) == list(range(len(WAVE_LENGTHS["de"])))  # nothing filtered in evaluation


def test_waveform_normalization_matches_transformers(wave_sources, vocab):
    extractor = pytest.importorskip("transformers").Wav2Vec2FeatureExtractor
    b = next(make_eval_pipeline(wave_sources["es"], vocab, replace(WCFG, cmvn="utterance"), batch_size=4, lang="es"))
    raw = [wave_sources["es"][i]["audio"].astype(np.float32) / 32768 for i in b["index"][:3]]
    padded = np.zeros((3, b["features"].shape[1]), np.float32)
    mask = np.zeros_like(padded, np.int32)
    for r, x in enumerate(raw):
        padded[r, : len(x)], mask[r, : len(x)] = x, 1
    want = extractor.zero_mean_unit_var_norm(list(padded), list(mask), padding_value=0.0)
    np.testing.assert_allclose(b["features"][:3], np.stack(want), rtol=1e-6, atol=1e-6)


def test_waveform_errors_and_metadata_units(sources, wave_sources, vocab, tmp_path):
    with pytest.raises(ValueError, match="specaugment='ld'.*features='waveform'"):
        PipelineConfig(features="waveform")
    with pytest.raises(ValueError, match="cmvn='global'"):
        replace(WCFG, cmvn="global", global_cmvn_path="gcmvn.npz")
    with pytest.raises(ValueError, match="features must be"):
        replace(WCFG, features="mfcc")
    with pytest.raises(ValueError, match="stream 'de'.*waveform.*fbank"):
        make_train_pipeline(sources, vocab, WCFG)  # fbank sources
    with pytest.raises(ValueError, match="eval source \\(de\\).*waveform.*fbank"):
        make_eval_pipeline(sources["de"], vocab, WCFG, lang="de")
    frames = {l: scan_source(s, vocab, l) for l, s in wave_sources.items()}
    assert frames["de"].features == "fbank" and frames["de"].n_frames[0] == 0  # 150 samples: no full frame
    with pytest.raises(ValueError, match="metadata for de counts frames.*needs samples"):
        make_train_pipeline(wave_sources, vocab, WCFG, metadata=frames)
    with pytest.raises(ValueError, match="counts frames"):
        make_eval_pipeline(wave_sources["es"], vocab, WCFG, lang="es", metadata=frames["es"])
    samples = scan_source(wave_sources["de"], vocab, "de", features="waveform", source_tokens=True)
    assert samples.features == "waveform" and list(samples.n_frames) == WAVE_LENGTHS["de"]
    samples.save(tmp_path / "de.npz")
    back = SourceMeta.load(tmp_path / "de.npz")
    assert back.features == "waveform" and np.array_equal(back.n_frames, samples.n_frames)
    np.testing.assert_array_equal(back.n_src_tokens, samples.n_src_tokens)
    with pytest.raises(ValueError, match="counts samples"):
        make_train_pipeline(wave_sources, vocab, CFG, metadata={"de": back})
    old = tmp_path / "old.npz"  # written before features / n_src_tokens existed
    np.savez(old, kind="fbank", n_frames=frames["es"].n_frames, n_tokens=frames["es"].n_tokens,
             tgt_langs=frames["es"].tgt_langs)
    loaded = SourceMeta.load(old)
    assert loaded.features == "fbank" and loaded.n_src_tokens is None


# -- streams with their own target language, source tokens ------------------------------------------

STREAMS, TARGETS = ("de-fr", "es-fr", "fr-de"), ("fr", "fr", "de")
STREAM_SIZES = {"de-fr": 40, "es-fr": 20, "fr-de": 10}
SRC_CFG = replace(CFG, langs=STREAMS, targets=TARGETS)
LONG_SOURCE = " ".join(WORDS)


@pytest.fixture(scope="module")
def stream_sources():
    rng = np.random.default_rng(3)
    out = {}
    for stream, n in STREAM_SIZES.items():
        src, tgt = stream.split("-")
        out[stream] = [dict(example(tgt, int(rng.integers(5, 65)), " ".join(rng.choice(WORDS, 3)), rng),
                            src_lang=src.encode(),
                            src_text=" ".join(rng.choice(WORDS, int(rng.integers(1, 4)))).encode())
                       for _ in range(n)]
    out["de-fr"][3]["src_text"] = LONG_SOURCE.encode()
    out["de-fr"][7]["src_text"] = b""
    out["es-fr"][0]["src_text"] = LONG_SOURCE.encode()
    return out


def test_streams_encode_their_target_language(stream_sources, vocab):
    pipe = make_train_pipeline(stream_sources, vocab, SRC_CFG)
    assert pipe.langs == list(STREAMS) and pipe.stats.kept == STREAM_SIZES
    seen = []
    for b in epoch(pipe):
        assert b["group_lang"].shape == (3,)
        for gi, r in zip(*np.nonzero(b["valid"])):
            sid = int(b["group_lang"][gi])
            ex = stream_sources[STREAMS[sid]][b["index"][gi, r]]
            ids = vocab.encode(ex["tgt_text"].decode(), TARGETS[sid])
            assert b["target"][gi, r, 0] == vocab.lang_id(TARGETS[sid]) == vocab.lang_id(ex["tgt_lang"].decode())
            np.testing.assert_array_equal(b["target"][gi, r, : len(ids)], ids)
            np.testing.assert_array_equal(b["decoder_input"][gi, r, : len(ids)], [EOS_ID] + ids[:-1])
            seen.append((sid, int(b["index"][gi, r])))
    assert sorted(seen) == [(s, i) for s, name in enumerate(STREAMS) for i in range(STREAM_SIZES[name])]
    assert "src_tokens" not in b
    with pytest.raises(ValueError, match="unknown target language 'de-fr'"):
        make_train_pipeline(stream_sources, vocab, replace(CFG, langs=STREAMS))
    with pytest.raises(ValueError, match="target language of each stream"):
        replace(CFG, langs=STREAMS, targets=("fr", "de"))
    evaluated = make_eval_pipeline(stream_sources["fr-de"], vocab, SRC_CFG, batch_size=8, lang="de")
    assert evaluated.langs == ["fr", "de"]
    for b in evaluated:
        real = b["valid"] == 1
        assert (b["lang"][real] == 1).all() and (b["target"][real, 0] == vocab.lang_id("de")).all()


def test_temperature_sampling_over_streams(stream_sources, vocab):
    pipe = make_train_pipeline(stream_sources, vocab, replace(SRC_CFG, temperature=float("inf")))
    # two streams share the target fr: sampling is over the three streams, not over two target languages
    assert pipe.stats.epoch_examples == dict(zip(STREAMS, epoch_sizes([40, 20, 10], float("inf")).tolist()))
    assert pipe.stats.epoch_examples == {"de-fr": 23, "es-fr": 23, "fr-de": 23}
    counts = np.zeros(3)
    for _ in range(3):
        for b in epoch(pipe):
            for sid, _ in rows(b):
                counts[sid] += 1
    np.testing.assert_allclose(counts / counts.sum(), [1 / 3] * 3, atol=0.03)


def src_ids(vocab, ex):
    return vocab.encode(ex["src_text"].decode(), ex["src_lang"].decode())


def test_source_tokens_train_and_eval(stream_sources, vocab):
    cfg = replace(SRC_CFG, source_tokens=8)
    lengths = {s: np.array([len(src_ids(vocab, ex)) for ex in stream_sources[s]]) for s in STREAMS}
    assert lengths["de-fr"][3] > 8 and lengths["de-fr"][7] == 2 and lengths["es-fr"][0] > 8
    pipe = make_train_pipeline(stream_sources, vocab, cfg)
    for s in STREAMS:
        assert pipe.stats.dropped_by_lang[s]["source_too_long"] == np.count_nonzero(lengths[s] > 8)
        assert pipe.stats.dropped_by_lang[s]["empty_source"] == np.count_nonzero(lengths[s] == 2)
    assert pipe.stats.dropped == {"source_too_long": 2, "empty_source": 1}
    seen = []
    for b in epoch(pipe):
        assert b["src_tokens"].shape == (*b["valid"].shape, 8) and b["src_tokens"].dtype == np.int32
        assert (b["src_tokens"][b["valid"] == 0] == PAD_ID).all()
        for gi, r in zip(*np.nonzero(b["valid"])):
            ex = stream_sources[STREAMS[b["group_lang"][gi]]][b["index"][gi, r]]
            ids = src_ids(vocab, ex)
            assert ids[0] == vocab.lang_id(ex["src_lang"].decode()) and ids[-1] == EOS_ID
            np.testing.assert_array_equal(b["src_tokens"][gi, r], ids + [PAD_ID] * (8 - len(ids)))
            seen.append((STREAMS[b["group_lang"][gi]], int(b["index"][gi, r])))
    assert sorted(seen) == sorted((s, i) for s in STREAMS for i in np.flatnonzero((lengths[s] > 2) & (lengths[s] <= 8)))
    with pytest.raises(ValueError, match="no source token counts"):
        make_train_pipeline(stream_sources, vocab, cfg,
                            metadata={s: scan_source(stream_sources[s], vocab, t) for s, t in zip(STREAMS, TARGETS)})

    evaluated = make_eval_pipeline(stream_sources["de-fr"], vocab, cfg, batch_size=8, lang="fr")
    rows_seen = 0
    for b in evaluated:
        assert (b["src_tokens"][b["valid"] == 0] == PAD_ID).all()
        for r in np.flatnonzero(b["valid"]):
            ids = src_ids(vocab, stream_sources["de-fr"][b["index"][r]])
            want = ids if len(ids) <= 8 else ids[:7] + [EOS_ID]
            np.testing.assert_array_equal(b["src_tokens"][r], want + [PAD_ID] * (8 - len(want)))
            rows_seen += 1
    assert rows_seen == STREAM_SIZES["de-fr"] and evaluated.stats.src_truncated == {"fr": 1}
