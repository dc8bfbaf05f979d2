"""Grain input pipeline: filtering, static shapes, stratification, sampling, sharding, state, features."""
import collections
from dataclasses import replace

import numpy as np
import pytest

from mlst_jax.audio import GlobalCMVN, fbank, utterance_cmvn
from mlst_jax.data.pipeline import (
    PipelineConfig,
    SourceMeta,
    epoch_sizes,
    language_probs,
    make_eval_pipeline,
    make_train_pipeline,
    scan_source,
)
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
