"""Auxiliary CTC loss on the encoder over the source transcript's characters.

fairseq's recipes start the S2T encoder from an ASR model; `optim.ctc_weight > 0` gives the encoder that
signal during speech-translation training instead (ESPnet's multi-task CTC): a linear layer on the encoder
output (`S2TConfig.ctc_vocab_size`, top-level parameters `ctc_proj`, shared by every sharing plan) predicts
the lower-cased transcript as characters of `ALPHABET` (`mlst_jax.data.ctc_labels`), with the blank at id 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mlst_jax.data.ctc_labels import BLANK_ID

__all__ = ["ctc_loss_sums"]


def ctc_loss_sums(logits: jax.Array, enc_valid: jax.Array, labels: jax.Array, label_paddings: jax.Array,
                  row_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(CTC loss summed over weighted rows, their label count); divide for a per-character mean.

    logits [B, S, C] over encoder frames (`enc_valid` [B, S] marks the real ones), labels [B, N] int with
    `label_paddings` [B, N] (1 past each transcript). Rows without labels, and rows whose transcript cannot be
    aligned to their frames (labels plus the blanks needed between repeated characters exceed the frames), get
    weight 0 instead of CTC's huge finite penalty.
    """
    logits = logits.astype(jnp.float32)
    frame_pad = 1.0 - enc_valid.astype(jnp.float32)
    label_paddings = label_paddings.astype(jnp.float32)
    per_row = optax.ctc_loss(logits, frame_pad, labels, label_paddings, blank_id=BLANK_ID)
    real = 1.0 - label_paddings
    n_labels = real.sum(-1)
    repeats = ((labels[:, 1:] == labels[:, :-1]) * real[:, 1:]).sum(-1)
    feasible = (n_labels + repeats <= enc_valid.sum(-1)) & (n_labels > 0)
    w = row_weights.astype(jnp.float32) * feasible
    return (jnp.where(w > 0, per_row, 0.0) * w).sum(), (n_labels * w).sum()
