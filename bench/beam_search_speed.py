"""Beam-5 decoding: our jitted beam search (KV cache) vs HF `generate(num_beams=5)`, on the same weights.

    python bench/beam_search_speed.py [--arch s2t_transformer_s] [--batch 8] [--new-tokens 60] [--breakdown]

Both decode the same padded batch of random features with a random model (which never emits </s>, so both
run exactly `--new-tokens` steps: equal work). Prints the median time of each, the ratio (reference / ours),
and whether the two agree on the hypotheses. `--breakdown` also times both encoders alone and the matrix
products of one decoding step on their own (the decoder layers' projections and the output layer for
batch × 5 rows, nothing else), and prints the best ratio these leave possible.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.common import reference_pair, timed

TAG = 7


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="s2t_transformer_s")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--new-tokens", type=int, default=60)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--breakdown", action="store_true", help="also time the encoders and the step's matmuls alone")
    args = ap.parse_args()

    from mlst_jax.models.s2t_transformer import named_config

    cfg = named_config(args.arch, vocab_size=args.vocab)
    ref, ours = reference_pair(cfg)
    ref.eval()

    rng = np.random.default_rng(0)
    b, t = args.batch, args.frames
    lens = rng.integers(t // 2, t + 1, size=b).astype(np.int32)
    lens[0] = t
    mask = np.arange(t)[None] < lens[:, None]
    feats = (rng.standard_normal((b, t, 80)) * mask[..., None]).astype(np.float32)
    m = args.new_tokens

    out = {}

    def run_ours():
        out["ours"] = ours.generate(feats, lens, TAG, beam_size=5, max_len_b=m - 1, convention="hf")

    def run_ref():
        with torch.no_grad():
            out["ref"] = ref.generate(input_features=torch.from_numpy(feats),
                                      attention_mask=torch.from_numpy(mask.astype(np.int64)), num_beams=5,
                                      max_new_tokens=m, early_stopping=True, forced_bos_token_id=TAG,
                                      do_sample=False)

    t_ours = timed(run_ours, args.repeats, warmup=1)
    t_ref = timed(run_ref, args.repeats, warmup=1)
    ref_ids = [row[1:].tolist() for row in out["ref"]]
    same = sum(a == r[: len(a)] for a, r in zip(out["ours"], ref_ids))
    print(f"beam 5, {args.arch}, batch {b} × ≤{t} frames, {m} new tokens, vocab {args.vocab}; "
          f"torch threads={torch.get_num_threads()}")
    print(f"ours (jax jit, KV cache): {t_ours:.2f} s")
    print(f"reference (HF generate): {t_ref:.2f} s")
    print(f"speedup = reference/ours = {t_ref / t_ours:.2f}x")
    print(f"identical best hypotheses: {same}/{b} (HF's padded batch differs from per-utterance decoding on the "
          f"last frames of shorter inputs; see models/s2t_transformer.py)")
    if args.breakdown:
        _breakdown(cfg, ref, ours, feats, lens, mask, m, t_ours, t_ref, args.repeats)


def _breakdown(cfg, ref, ours, feats, lens, mask, m, t_ours, t_ref, repeats):
    import jax
    import jax.numpy as jnp

    model, cls = ours.model, type(ours.model)
    encode = jax.jit(lambda p, f, n: model.apply({"params": p}, f, n, method=cls.encode))
    e_ours = timed(lambda: jax.block_until_ready(encode(ours.params, feats, lens)), repeats, warmup=1)

    def ref_encode():
        with torch.no_grad():
            ref.model.encoder(input_features=torch.from_numpy(feats),
                              attention_mask=torch.from_numpy(mask.astype(np.int64)))

    e_ref = timed(ref_encode, repeats, warmup=1)
    rows, d, f, layers = feats.shape[0] * 5, cfg.d_model, cfg.decoder_ffn_dim, cfg.decoder_layers
    shapes = {"qkv": (layers, d, 3 * d), "o": (layers, d, d), "cross_q": (layers, d, d), "cross_o": (layers, d, d),
              "fc1": (layers, d, f), "fc2": (layers, f, d), "out": (d, cfg.vocab_size)}
    w = {k: jnp.asarray(np.random.default_rng(0).standard_normal(s, np.float32) * 0.02) for k, s in shapes.items()}

    def step(x, w):
        for i in range(layers):
            x = x + (x @ w["qkv"][i])[:, :d] @ w["o"][i]
            x = x + (x @ w["cross_q"][i]) @ w["cross_o"][i]
            x = x + jax.nn.relu(x @ w["fc1"][i]) @ w["fc2"][i]
        return x + (x @ w["out"])[:, :d] * 1e-3

    # weights as arguments, like the parameters of the real decoder (as constants XLA:CPU lays them out ahead)
    matmuls = jax.jit(lambda x, w: jax.lax.fori_loop(0, m, lambda _, x: step(x, w), x))
    x0 = jnp.full((rows, d), 0.01, jnp.float32)
    floor = timed(lambda: jax.block_until_ready(matmuls(x0, w)), repeats, warmup=1)
    print(f"encoder alone: ours {e_ours:.2f} s, reference {e_ref:.2f} s")
    print(f"per decoding step (total minus encoder, / {m}): ours {(t_ours - e_ours) / m * 1e3:.1f} ms, "
          f"reference {(t_ref - e_ref) / m * 1e3:.1f} ms")
    print(f"the step's matrix products alone ({rows} rows): {floor / m * 1e3:.1f} ms per step")
    print(f"best ratio with our encoder and steps costing only their matrix products: "
          f"{t_ref / (e_ours + floor):.2f}x")


if __name__ == "__main__":
    main()
