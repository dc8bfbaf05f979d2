"""wav2vec 2.0 forward throughput (fp32, inference) of our JAX model vs HF PyTorch `Wav2Vec2Model` on the same weights.

    python -m bench.wav2vec2_speed [--arch base] [--batch 2] [--seconds 5] [--steps 5]

Builds a random HF model of the named architecture, converts its saved weights with `load_hf_wav2vec2`, checks
that both give the same hidden states, then times a jitted forward pass against `torch.no_grad()` with
`torch.set_num_threads(os.cpu_count())`. Prints the median times, seconds of audio per second, and the ratio
(reference time / our time; > 1 means we are faster).
"""
from __future__ import annotations

import argparse
import os
import tempfile

import jax
import numpy as np
import torch
import transformers

from bench.common import timed
from mlst_jax.convert.wav2vec2 import load_hf_wav2vec2
from mlst_jax.models.wav2vec2 import Wav2Vec2, named_config

SR = 16000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="base", help="wav2vec2 architecture: base or large_lv60")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()

    torch.set_num_threads(os.cpu_count())
    cfg = named_config(args.arch)
    hf_cfg = transformers.Wav2Vec2Config(**{k: v for k, v in cfg.to_dict().items() if k != "dtype"})
    torch.manual_seed(0)
    ref = transformers.Wav2Vec2Model(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        config, params = load_hf_wav2vec2(d)
    params = jax.tree.map(jax.numpy.asarray, params)

    n = int(args.seconds * SR)
    wav = np.random.default_rng(0).standard_normal((args.batch, n)).astype(np.float32)
    lens = np.full((args.batch,), n, np.int32)
    model = Wav2Vec2(config)
    ours_fn = jax.jit(lambda p, w, l: model.apply({"params": p}, w, l)[0])
    wav_t = torch.from_numpy(wav)

    def ours():
        return ours_fn(params, wav, lens).block_until_ready()

    def reference():
        with torch.no_grad():
            return ref(wav_t).last_hidden_state

    diff = np.abs(np.asarray(ours()) - reference().numpy()).max()
    t_ours, t_ref = timed(ours, args.steps), timed(reference, args.steps)
    audio = args.batch * args.seconds
    print(f"wav2vec2 {args.arch}: batch {args.batch} x {args.seconds:g} s, fp32, jax {jax.default_backend()}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; max |diff| {diff:.2e}")
    print(f"ours (jax.jit):        {t_ours * 1e3:8.1f} ms  ({audio / t_ours:6.1f} s audio/s)")
    print(f"reference (HF torch):  {t_ref * 1e3:8.1f} ms  ({audio / t_ref:6.1f} s audio/s)")
    print(f"ratio reference/ours = {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
