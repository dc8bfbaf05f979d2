"""Sequence losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def label_smoothed_nll(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                       epsilon: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """fairseq's label-smoothed cross-entropy, summed over positions with weight 1.

    logits [..., V], targets [...] int, weights [...] (0 for padding and ignored positions such as the
    language-tag prefix). Returns (smoothed loss sum, plain NLL sum); divide by `weights.sum()` for a mean.
    Smoothing spreads `epsilon` uniformly over the V classes (fairseq: eps_i = epsilon / (V - 1) on the
    others, (1 - epsilon) on the target; written here in fairseq's exact form).
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    smooth = -logp.sum(axis=-1)
    eps_i = epsilon / (logits.shape[-1] - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    weights = weights.astype(jnp.float32)
    return (loss * weights).sum(), (nll * weights).sum()
