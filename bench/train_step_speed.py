"""Training step (forward + backward + Adam, fp32) of our S2T Transformer vs HF PyTorch on the same weights.

    python bench/train_step_speed.py [--arch s2t_transformer_s] [--batch 8] [--frames 600] [--tokens 40]

Prints the median step time of each and the ratio (reference time / our time; > 1 means we are faster).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from bench.common import reference_pair, timed
from mlst_jax.models.s2t_transformer import S2TTransformer, named_config
from mlst_jax.models.losses import label_smoothed_nll


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="s2t_transformer_s")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()

    cfg = named_config(args.arch, vocab_size=args.vocab)
    ref, ours = reference_pair(cfg)
    params = ours.params

    rng = np.random.default_rng(0)
    b, t, u = args.batch, args.frames, args.tokens
    lens = rng.integers(t // 2, t + 1, size=b).astype(np.int32)
    lens[0] = t
    feats = rng.standard_normal((b, t, 80)).astype(np.float32) * (np.arange(t)[None, :, None] < lens[:, None, None])
    tgt = rng.integers(4, args.vocab, size=(b, u)).astype(np.int32)
    dec_in = np.concatenate([np.full((b, 1), 2, np.int32), tgt[:, :-1]], axis=1)
    weights = np.ones((b, u), np.float32)

    # -- ours ----------------------------------------------------------------------------------------
    model = S2TTransformer(cfg)
    tx = optax.adam(1e-4)

    def loss_fn(p, rng_key):
        logits = model.apply({"params": p}, feats, lens, dec_in, deterministic=False, rngs={"dropout": rng_key})
        loss, _ = label_smoothed_nll(logits, tgt, weights, 0.1)
        return loss / weights.sum()

    @jax.jit
    def step(p, opt_state, rng_key):
        grads = jax.grad(loss_fn)(p, rng_key)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    state = {"p": jax.tree.map(jnp.asarray, params)}
    state["o"] = tx.init(state["p"])

    def ours():
        state["p"], state["o"] = step(state["p"], state["o"], jax.random.PRNGKey(0))
        jax.block_until_ready(state["p"])

    # -- reference -----------------------------------------------------------------------------------
    ref.train()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-4)
    tf, tm = torch.from_numpy(feats), torch.from_numpy((np.arange(t)[None] < lens[:, None]).astype(np.int64))
    td, tt = torch.from_numpy(dec_in).long(), torch.from_numpy(tgt).long()

    def reference():
        opt.zero_grad()
        logits = ref(input_features=tf, attention_mask=tm, decoder_input_ids=td).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, args.vocab), tt.reshape(-1), label_smoothing=0.1)
        loss.backward()
        opt.step()

    t_ours, t_ref = timed(ours, args.steps), timed(reference, args.steps)
    print(f"train step {args.arch} batch={b}x{t} frames, {u} tokens, vocab {args.vocab}; "
          f"torch threads={torch.get_num_threads()}, jax devices={jax.devices()[0].platform}x{jax.device_count()}")
    print(f"ours (jax jit): {t_ours * 1000:.0f} ms/step")
    print(f"reference (HF PyTorch): {t_ref * 1000:.0f} ms/step")
    print(f"speedup = reference/ours = {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
