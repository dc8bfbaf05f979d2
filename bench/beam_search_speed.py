"""Beam-5 decoding: our jitted beam search (KV cache) vs HF `generate(num_beams=5)`, on the same weights.

    python bench/beam_search_speed.py [--arch s2t_transformer_s] [--batch 8] [--new-tokens 60]

Both decode the same padded batch of random features with a random model (which never emits </s>, so both
run exactly `--new-tokens` steps: equal work). Prints the median time of each, the ratio (reference / ours),
and whether the two agree on the hypotheses.
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


if __name__ == "__main__":
    main()
