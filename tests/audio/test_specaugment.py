"""SpecAugment masks with fairseq's SpecAugmentTransform semantics."""
import numpy as np
import pytest

from mlst_jax.audio.specaugment import POLICIES, SpecAugment, get_policy


def spectrogram(t, d=80, seed=0):
    return np.random.default_rng(seed).standard_normal((t, d)).astype(np.float32) + 3.0


def mask_of(policy, t, d, seed):
    freq, time = policy.masks(t, d, np.random.default_rng(seed))
    m = np.zeros((t, d), bool)
    for f0, f in freq:
        m[:, f0 : f0 + f] = True
    for t0, w in time:
        m[t0 : t0 + w] = True
    return freq, time, m


def test_ld_policy_is_fairseqs():
    assert get_policy("ld") == SpecAugment(freq_mask_n=2, freq_mask_f=27, time_mask_n=2, time_mask_t=100,
                                           time_mask_p=1.0, mask_value=None)
    assert get_policy(None) is None and set(POLICIES) == {"lb", "ld", "sm", "ss"}
    with pytest.raises(ValueError, match="unknown SpecAugment policy"):
        get_policy("xx")


def test_mask_counts_and_width_bounds():
    ld = POLICIES["ld"]
    widths_f, widths_t = set(), set()
    for seed in range(400):
        t = 150 + seed
        freq, time = ld.masks(t, 80, np.random.default_rng(seed))
        assert len(freq) == 2 and len(time) == 2
        for f0, f in freq:
            assert 0 <= f <= 26 and 0 <= f0 and f0 + f <= 79
            widths_f.add(f)
        for t0, w in time:
            assert 0 <= w <= 99 and 0 <= t0 and t0 + w <= t - 1
            widths_t.add(w)
    assert widths_f == set(range(27)) and max(widths_t) >= 95


def test_time_mask_capped_by_p():
    sm = POLICIES["sm"]  # T = 70, p = 0.2
    for seed in range(200):
        _, time = sm.masks(50, 80, np.random.default_rng(seed))
        assert len(time) == 2 and all(w <= 9 for _, w in time)  # min(70, floor(0.2 * 50)) = 10 -> w < 10
    assert sm.masks(4, 80, np.random.default_rng(0))[1] == []  # floor(0.8) = 0: no time masks
    short = POLICIES["ld"].masks(30, 80, np.random.default_rng(1))[1]
    assert all(w <= 29 for _, w in short)
    assert POLICIES["ld"].masks(0, 80, np.random.default_rng(0)) == ([], [])
    assert POLICIES["ld"].masks(10, 20, np.random.default_rng(0)) == ([], [])  # fewer freqs than F: unchanged


def test_mask_value_and_nothing_changed_outside_masks():
    x = spectrogram(300)
    for seed in range(20):
        _, _, m = mask_of(POLICIES["ld"], 300, 80, seed)
        y = POLICIES["ld"](x, np.random.default_rng(seed))
        np.testing.assert_array_equal(y[~m], x[~m])
        np.testing.assert_allclose(y[m], x.mean(), rtol=1e-6)  # default value: the input's mean
    fixed = SpecAugment(freq_mask_n=2, freq_mask_f=27, time_mask_n=2, time_mask_t=100, time_mask_p=1.0, mask_value=0.0)
    _, _, m = mask_of(fixed, 300, 80, 5)
    assert (fixed(x, np.random.default_rng(5))[m] == 0).all()


def test_deterministic_given_generator():
    x = spectrogram(200)
    a = POLICIES["ld"](x, np.random.default_rng(7))
    b = POLICIES["ld"](x, np.random.default_rng(7))
    c = POLICIES["ld"](x, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.shares_memory(a, x)


def test_respects_valid_length():
    x = spectrogram(120)
    x[90:] = 0.0
    _, _, m = mask_of(POLICIES["ld"], 90, 80, 3)
    y = POLICIES["ld"](x, np.random.default_rng(3), n_frames=90)
    assert not y[90:].any()
    np.testing.assert_array_equal(y[:90][~m], x[:90][~m])
    np.testing.assert_allclose(y[:90][m], x[:90].mean(), rtol=1e-6)
    batch = np.stack([x, spectrogram(120, seed=1)])
    out = POLICIES["ld"].batch(batch, [90, 120], np.random.default_rng(3))
    np.testing.assert_array_equal(out[0], y)
