"""Tests for the audio front end: fbank parity with transformers, CMVN, loading, espeak TTS."""
import logging

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from mlst_jax.audio import GlobalCMVN, fbank, fbank_batch, load_audio, utterance_cmvn
from mlst_jax.audio.fbank import num_frames
from mlst_jax.data.synthetic.tts import synthesize, synthesize_16k

SR = 16000


@pytest.fixture(scope="module")
def hf_extractor():
    transformers = pytest.importorskip("transformers")
    return transformers.Speech2TextFeatureExtractor(
        feature_size=80,
        num_mel_bins=80,
        do_ceptral_normalize=False,
        normalize_means=False,
        normalize_vars=False,
    )


@pytest.fixture(scope="module")
def speech():
    audio, sr = synthesize_16k("Hello world. The quick brown fox jumps over the lazy dog.")
    assert sr == SR
    return audio


def _noise(n, seed=0, scale=0.1):
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("kind", ["speech", "noise", "odd_length"])
def test_fbank_matches_transformers(kind, speech, hf_extractor):
    audio = {"speech": speech, "noise": _noise(2 * SR), "odd_length": _noise(2 * SR + 123, seed=1)}[kind]
    ours = fbank(audio, SR)
    ref = hf_extractor(audio, sampling_rate=SR)["input_features"][0]
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (1 + (len(audio) - 400) // 160, 80)
    assert np.abs(ours - ref).max() <= 1e-3


def test_fbank_batch_matches_single():
    lengths = np.array([2 * SR, 2 * SR - 4321, 400, 399])
    batch = np.zeros((len(lengths), 2 * SR), np.float32)
    for i, n in enumerate(lengths):
        batch[i, :n] = _noise(n, seed=10 + i)
    feats, n_frames = fbank_batch(batch, lengths)
    feats, n_frames = np.asarray(feats), np.asarray(n_frames)
    assert feats.shape == (4, 1 + (2 * SR - 400) // 160, 80)
    np.testing.assert_array_equal(n_frames, num_frames(lengths))
    assert n_frames.tolist() == [198, 171, 1, 0]
    for i, n in enumerate(lengths):
        if n_frames[i]:
            np.testing.assert_allclose(feats[i, : n_frames[i]], fbank(batch[i, :n], SR), atol=1e-5)
        assert not feats[i, n_frames[i] :].any()


@pytest.mark.parametrize(
    "waveform, match",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.full(1000, np.nan, np.float32), "non-finite"),
        (np.array([0.0] * 500 + [np.inf], np.float32), "1 non-finite"),
        (np.zeros(399, np.float32), "399 samples"),
        (np.zeros((2, 16000), np.float32), "down-mix"),
    ],
)
def test_fbank_rejects_bad_input(waveform, match):
    with pytest.raises(ValueError, match=match):
        fbank(waveform, SR)


def test_fbank_rejects_other_sample_rate():
    with pytest.raises(ValueError, match="resample"):
        fbank(np.zeros(16000, np.float32), 8000)


def test_utterance_cmvn_valid_frames():
    feats = np.random.default_rng(0).normal(3.0, 2.5, (2, 50, 80)).astype(np.float32)
    n_frames = np.array([50, 30])
    out = utterance_cmvn(feats, n_frames)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    for b, n in enumerate(n_frames):
        np.testing.assert_allclose(out[b, :n].mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(out[b, :n].std(0), 1.0, atol=1e-4)
        assert not out[b, n:].any()
    single = utterance_cmvn(feats[1, :30])
    np.testing.assert_allclose(single, out[1, :30], atol=1e-6)
    np.testing.assert_allclose(np.asarray(utterance_cmvn(jnp.asarray(feats), n_frames)), out, atol=1e-5)


def test_global_cmvn_stats_and_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    utts = [rng.normal(1.0, 2.0, (n, 80)).astype(np.float32) for n in (40, 75, 13)]
    stats = GlobalCMVN()
    for u in utts:
        stats.update(u)
    cat = np.concatenate(utts)
    np.testing.assert_allclose(stats.mean, cat.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.std, cat.std(0), rtol=1e-5)
    np.testing.assert_allclose(stats.apply(utts[0]), (utts[0] - cat.mean(0)) / cat.std(0), atol=1e-4)
    path = tmp_path / "gcmvn.npz"
    stats.save(path)
    loaded = GlobalCMVN.load(path)
    assert loaded.count == len(cat)
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.std, stats.std)
    fairseq_style = tmp_path / "fairseq.npz"
    np.savez(fairseq_style, mean=stats.mean, std=stats.std)
    np.testing.assert_array_equal(GlobalCMVN.load(fairseq_style).apply(utts[1]), stats.apply(utts[1]))


def test_load_audio_stereo_44k(tmp_path, caplog):
    sr_in = 44100
    t = np.arange(sr_in) / sr_in
    tone = np.sin(2 * np.pi * 440.0 * t)
    stereo = np.stack([0.6 * tone, 0.2 * tone], axis=1).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, sr_in, subtype="FLOAT")

    native, sr = load_audio(path, target_sr=None)
    assert sr == sr_in and native.ndim == 1 and native.dtype == np.float32
    np.testing.assert_allclose(native, stereo.mean(1), atol=1e-7)

    with caplog.at_level(logging.INFO, logger="mlst_jax.audio.io"):
        audio, sr = load_audio(path)
    assert sr == SR and audio.dtype == np.float32
    assert abs(len(audio) - SR) <= 1
    t16 = np.arange(len(audio)) / SR
    np.testing.assert_allclose(audio[500:-500], 0.4 * np.sin(2 * np.pi * 440.0 * t16[500:-500]), atol=1e-2)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "stereo.wav" in messages and "mono" in messages and "16000" in messages


def test_load_audio_bad_files(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, _noise(8000), SR, subtype="PCM_16")
    data = good.read_bytes()
    cases = {
        "header_cut.wav": (data[:30], "header_cut.wav"),
        "garbage.wav": (b"not audio at all" * 64, "garbage.wav"),
        "truncated.wav": (data[: len(data) // 2], "truncated"),
        "empty_data.wav": (data[:44], "no samples"),
    }
    for name, (content, match) in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=match) as err:
            load_audio(bad)
        assert name in str(err.value)
    with pytest.raises(ValueError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")


def test_tts_deterministic_and_plausible():
    a, sr = synthesize("hello world")
    b, _ = synthesize("hello world")
    assert sr == 22050 and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.sqrt(np.mean(a**2)) > 0.01
    assert 0.3 <= len(a) / sr <= 3.0


def test_tts_breathy_voices_reproducible_across_time():
    """espeak-ng seeds its breath noise from the clock; the wrapper fixes the seed."""
    import time

    first = [synthesize("the quick brown fox", "en", v)[0] for v in ("whisper", "f2")]
    time.sleep(1.1)
    second = [synthesize("the quick brown fox", "en", v)[0] for v in ("whisper", "f2")]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
