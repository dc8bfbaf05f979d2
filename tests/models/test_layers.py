"""Shared layers: the hash-based dropout's statistics and reproducibility, sinusoidal positions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.models import layers

SHAPE = (8, 125, 1000)  # 1M elements


def _drop(rate, key, x=None, deterministic=False):
    x = jnp.ones(SHAPE) if x is None else x
    return np.asarray(layers.Dropout(rate).apply({}, x, deterministic, rngs={"dropout": key}))


@pytest.mark.parametrize("rate", [0.1, 0.15, 0.5])
def test_dropout_rate_scale_and_independence(rate):
    y = _drop(rate, jax.random.PRNGKey(0))
    kept = y != 0
    n = kept.size
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs(1 - kept.mean() - rate) < 4 * sigma
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
    # neighbouring elements (along every axis) are dropped independently
    for axis in range(3):
        a, b = np.swapaxes(~kept, 0, axis)[:-1], np.swapaxes(~kept, 0, axis)[1:]
        assert abs((a & b).mean() - rate ** 2) < 6 * np.sqrt(rate ** 2 * (1 - rate ** 2) / a.size)
    # per-feature drop rates are uniform (no stuck columns)
    per_col = (~kept).reshape(-1, SHAPE[-1]).mean(0)
    assert per_col.min() > rate - 8 * np.sqrt(rate * (1 - rate) / 1000)


def test_dropout_reproducible_and_key_dependent():
    k0, k1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    np.testing.assert_array_equal(_drop(0.1, k0), _drop(0.1, k0))
    m0, m1 = _drop(0.1, k0) == 0, _drop(0.1, k1) == 0
    assert abs((m0 & m1).mean() - 0.01) < 0.002  # two keys give independent masks
    x = jnp.asarray(np.random.default_rng(0).standard_normal(SHAPE), jnp.float32)
    np.testing.assert_array_equal(_drop(0.1, k0, x, deterministic=True), np.asarray(x))
    np.testing.assert_array_equal(_drop(0.0, k0, x), np.asarray(x))
    assert not _drop(1.0, k0, x).any()


def test_sinusoidal_positions_match_fairseq_formula():
    dim, pad = 7, 1
    pos = jnp.array([[1, 2, 3, 50]])
    emb = np.asarray(layers.sinusoidal_positions(pos, dim, pad))
    half = dim // 2
    freqs = np.exp(np.arange(half) * -(np.log(10000.0) / (half - 1)))
    for j, p in enumerate([1, 2, 3, 50]):
        want = np.zeros(dim) if p == pad else np.concatenate([np.sin(p * freqs), np.cos(p * freqs), [0.0]])
        np.testing.assert_allclose(emb[0, j], want, atol=1e-5)
