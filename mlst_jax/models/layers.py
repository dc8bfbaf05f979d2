"""Building blocks shared by every model: attention, feed-forward, norms, masks, positions.

Parameter names follow the PyTorch reference implementations (`q_proj`, `fc1`, `self_attn_layer_norm`, ...)
so that checkpoint conversion is a transpose per leaf, not a rename table per model.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

# PyTorch's LayerNorm epsilon; flax's default (1e-6) would break parity with every reference model.
LN_EPS = 1e-5

xavier_uniform = nn.initializers.xavier_uniform()

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "swish": nn.swish,
    "silu": nn.swish,
}


def activation(name: str) -> Callable[[Array], Array]:
    """Returns the activation function called `name` (PyTorch / HF spelling)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def LayerNorm(name: str | None = None, dtype: Dtype = jnp.float32, epsilon: float = LN_EPS) -> nn.LayerNorm:
    """LayerNorm with PyTorch's epsilon (unless given), computed in float32."""
    return nn.LayerNorm(epsilon=epsilon, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


def length_mask(lengths: Array, max_len: int) -> Array:
    """[B] lengths -> [B, max_len] bool, True at valid positions."""
    return jnp.arange(max_len)[None, :] < lengths[:, None]


def causal_mask(length: int) -> Array:
    """[1, 1, T, T] bool lower-triangular mask."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def key_mask(valid: Array) -> Array:
    """[B, S] key validity -> [B, 1, 1, S] attention mask."""
    return valid[:, None, None, :]


def sinusoidal_positions(positions: Array, dim: int, padding_idx: int | None = None) -> Array:
    """fairseq / tensor2tensor sinusoidal embeddings of integer `positions` (any shape) -> [..., dim].

    Layout is [sin(half) | cos(half)] with frequencies exp(-i·log(10000)/(half-1)); an odd `dim` gets a zero
    column; the row of `padding_idx` is zero.
    """
    half = dim // 2
    scale = math.log(10000.0) / (half - 1)
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -scale)
    args = positions.astype(jnp.float32)[..., None] * freqs
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros(emb.shape[:-1] + (1,), emb.dtype)], axis=-1)
    if padding_idx is not None:
        emb = jnp.where((positions == padding_idx)[..., None], 0.0, emb)
    return emb


def make_positions(valid: Array, padding_idx: int, offset: Array | int = 0) -> Array:
    """fairseq's `make_positions`: valid tokens are numbered padding_idx+1+offset, ...; padding gets padding_idx."""
    valid = valid.astype(jnp.int32)
    return (jnp.cumsum(valid, axis=-1) + offset) * valid + padding_idx


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array | None, dropout: "Dropout | None",
                          deterministic: bool) -> Array:
    """Head-major q [B, H, Tq, D] (already scaled), k/v [B, H, Tk, D], mask broadcastable to [B, H, Tq, Tk].

    Batch and head dims lead in every operand so both contractions are plain batched matmuls (XLA:CPU runs
    other layouts through a much slower generic path).
    """
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    if dropout is not None:
        weights = dropout(weights, deterministic=deterministic)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, v)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with q/k/v/out projections (with biases), as in fairseq and HF.

    `__call__` covers self- and cross-attention on full sequences; `project_kv` precomputes cross-attention
    keys/values once per source; `decode` runs one incremental self-attention step against a KV cache.
    """

    features: int
    num_heads: int
    dropout_rate: float = 0.0
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    def setup(self):
        if self.features % self.num_heads:
            raise ValueError(f"features={self.features} is not divisible by num_heads={self.num_heads}")
        dense = lambda name: nn.Dense(self.features, use_bias=self.use_bias, dtype=self.dtype,
                                      kernel_init=xavier_uniform, name=name)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (dense(n) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
        self.attn_dropout = Dropout(self.dropout_rate) if self.dropout_rate > 0 else None

    @property
    def head_dim(self) -> int:
        return self.features // self.num_heads

    def _heads(self, x: Array) -> Array:
        """[B, T, F] -> head-major [B, H, T, D]."""
        return jnp.swapaxes(x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim)), 1, 2)

    def _query(self, x: Array) -> Array:
        return self._heads(self.q_proj(x)) * (self.head_dim ** -0.5)

    def _output(self, ctx: Array) -> Array:
        ctx = jnp.swapaxes(ctx, 1, 2)
        return self.out_proj(ctx.reshape(ctx.shape[:-2] + (self.features,)))

    def project_kv(self, x: Array) -> tuple[Array, Array]:
        """[B, S, F] -> keys and values, head-major [B, H, S, D] (the layout the KV cache keeps)."""
        return self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def __call__(self, x: Array, kv_input: Array | None = None, *, mask: Array | None = None,
                 kv: tuple[Array, Array] | None = None, deterministic: bool = True) -> Array:
        """Attends from `x` to `kv_input` (self-attention when None) or to precomputed `kv`."""
        k, v = kv if kv is not None else self.project_kv(x if kv_input is None else kv_input)
        ctx = dot_product_attention(self._query(x), k, v, mask, self.attn_dropout, deterministic)
        return self._output(ctx)

    def decode(self, x: Array, cache: dict[str, Array], index: Array) -> tuple[Array, dict[str, Array]]:
        """One step of causal self-attention: x [B, 1, F]; cache k/v [B, H, Tmax, D]; writes slot `index`."""
        k_new, v_new = self.project_kv(x)
        k = jax.lax.dynamic_update_slice_in_dim(cache["k"], k_new.astype(cache["k"].dtype), index, axis=2)
        v = jax.lax.dynamic_update_slice_in_dim(cache["v"], v_new.astype(cache["v"].dtype), index, axis=2)
        mask = (jnp.arange(k.shape[2]) <= index)[None, None, None, :]
        ctx = dot_product_attention(self._query(x), k, v, mask, None, True)
        return self._output(ctx), {"k": k, "v": v}


class FeedForward(nn.Module):
    """fc1 -> activation -> dropout -> fc2."""

    features: int
    hidden: int
    activation: str = "relu"
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        h = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=xavier_uniform, name="fc1")(x)
        h = activation(self.activation)(h)
        h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return nn.Dense(self.features, dtype=self.dtype, kernel_init=xavier_uniform, name="fc2")(h)


def _mix32(x: Array) -> Array:
    """murmur3's 32-bit finalizer: a bijective avalanche hash of uint32 counters."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


class Dropout(nn.Module):
    """Inverted dropout whose mask is a counter-based hash of the element index and a per-call seed.

    The seed comes from the module's 'dropout' RNG stream (one draw per call), so masks are reproducible from
    the RNG key like flax's `nn.Dropout`. Hashing the index instead of drawing a random word per element lets
    XLA fuse mask generation into the masking op: on CPU, per-element threefry/rbg bits cost ~30% of an S2T
    training step. The keep probability is exact to 2^-32.
    """

    rate: float

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        seed = jax.random.bits(self.make_rng("dropout"), (), jnp.uint32)
        idx = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)
        bits = _mix32(_mix32(idx ^ seed) + seed)
        keep = bits >= jnp.uint32(min(round(self.rate * 2.0 ** 32), 2 ** 32 - 1))
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))


def layer_dropped(module: nn.Module, rate: float, deterministic: bool) -> Array | None:
    """LayerDrop: a scalar bool that is True when the layer is skipped this call (None when LayerDrop is off).

    Drawn from `module`'s 'dropout' RNG stream; only in training (`deterministic=False`).
    """
    if deterministic or rate <= 0.0:
        return None
    return jax.random.uniform(module.make_rng("dropout"), ()) < rate


def rematerializable(call: Callable) -> Callable:
    """Decorator for a Transformer layer's `__call__`: when the module's `config.remat` is set, the call runs under
    `nn.remat` (jax.checkpoint), so its activations are recomputed in the backward pass instead of stored.

    `deterministic` is a static argument; variables keep their names, so the parameter tree is unchanged.
    """
    sig = inspect.signature(call)
    rematted = nn.remat(call, static_argnums=(list(sig.parameters).index("deterministic"),))

    @functools.wraps(call)
    def wrapped(self, *args, **kwargs):
        if not self.config.remat:
            return call(self, *args, **kwargs)
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()  # static_argnums needs `deterministic` passed positionally
        return rematted(*bound.args, **bound.kwargs)

    return wrapped


def glu(x: Array, axis: int = -1) -> Array:
    """Gated linear unit: first half * sigmoid(second half)."""
    a, b = jnp.split(x, 2, axis=axis)
    return a * jax.nn.sigmoid(b)


class BottleneckAdapter(nn.Module):
    """A residual bottleneck adapter (Bapna & Firat, 2019; `mlst_jax.finetune.adapters`): LayerNorm → fc1 (d → dim) → ReLU → dropout → fc2 (dim → d) → residual. fc2 starts at zero, so a new
    adapter is the identity and adding adapters to a trained model leaves its outputs unchanged."""

    dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        h = LayerNorm("layer_norm")(x).astype(self.dtype)
        h = nn.Dense(self.dim, dtype=self.dtype, kernel_init=xavier_uniform, name="fc1")(h)
        h = Dropout(self.dropout_rate)(nn.relu(h), deterministic=deterministic)
        h = nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=nn.initializers.zeros, name="fc2")(h)
        return x + h.astype(x.dtype)


class EncoderDecoder(nn.Module):
    """What beam search and the `Translator` call on every encoder-decoder model (through `Module.apply(...,
    method=...)`), given its `decoder` submodule: full-sequence decoding, the cross-attention keys and values of an
    encoder output, and one cached decoding step. Each model adds its own `encode`."""

    def decode(self, decoder_input_ids: Array, enc_out: Array, enc_valid: Array, deterministic: bool = True):
        return self.decoder(decoder_input_ids, enc_out, enc_valid, deterministic)

    def precompute_cross_kv(self, enc_out: Array):
        return self.decoder.precompute(enc_out)

    def decode_step(self, token, cache, index, cross_kv, enc_valid):
        return self.decoder.decode_step(token, cache, index, cross_kv, enc_valid)


def init_kv_cache(num_layers: int, num_heads: int, d_model: int, batch: int, max_len: int,
                  dtype=jnp.float32) -> list[dict[str, Array]]:
    """Zeroed self-attention KV cache: one {'k','v'} [batch, heads, max_len, d_model // heads] per decoder layer."""
    shape = (batch, num_heads, max_len, d_model // num_heads)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(num_layers)]
