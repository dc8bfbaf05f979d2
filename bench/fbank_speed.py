"""Throughput of the JAX fbank front end vs transformers' Speech2TextFeatureExtractor.

Synthesizes ~50 espeak-ng utterances of 2-10 s, then times
  * ours: jitted ``fbank_batch`` on length-sorted batches padded to bucketed
    lengths (after a warm-up pass that compiles every shape), and
  * reference: ``Speech2TextFeatureExtractor`` called per utterance.
Prints throughput in seconds of audio per second and ``speedup = ours/reference``.

Usage: python bench/fbank_speed.py [--utterances 50] [--batch-size 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mlst_jax.audio.fbank import bucket_length, fbank, fbank_batch  # noqa: E402
from mlst_jax.data.synthetic.tts import synthesize_16k  # noqa: E402

SR = 16000
WORDS = (
    "the a speech model translates spoken language into text across many languages while sharing "
    "parameters between encoder and decoder layers so that low resource directions benefit from "
    "related high resource pairs during training and evaluation on held out test sets"
).split()


def make_corpus(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` espeak utterances with durations in [2, 10] s."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        target = rng.uniform(2.0, 10.0)
        words = rng.choice(WORDS, size=max(3, int(target * 2.6)))
        audio, _ = synthesize_16k(" ".join(words), rate=int(rng.integers(150, 200)))
        if len(audio) >= 2 * SR:
            out.append(audio[: 10 * SR])
    return out


def make_batches(corpus: list[np.ndarray], batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Length-sorted batches of up to ``batch_size``, zero-padded to the bucket of their longest item."""
    order = sorted(range(len(corpus)), key=lambda i: len(corpus[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        items = [corpus[i] for i in order[start : start + batch_size]]
        wav = np.zeros((len(items), bucket_length(max(map(len, items)))), np.float32)
        lengths = np.zeros(len(items), np.int32)
        for row, audio in enumerate(items):
            wav[row, : len(audio)] = audio
            lengths[row] = len(audio)
        batches.append((wav, lengths))
    return batches


def run_ours(corpus: list[np.ndarray], batch_size: int) -> None:
    outputs = [fbank_batch(wav, lengths) for wav, lengths in make_batches(corpus, batch_size)]
    for feats, _ in outputs:
        feats.block_until_ready()


def best_times(fns: dict, repeats: int) -> dict:
    """Minimum wall time of each function over ``repeats`` interleaved rounds (fairer under shared-CPU noise)."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    """Run the benchmark and print throughputs and the speedup."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from transformers import Speech2TextFeatureExtractor

    reference = Speech2TextFeatureExtractor(
        feature_size=80, num_mel_bins=80, do_ceptral_normalize=False, normalize_means=False, normalize_vars=False
    )
    corpus = make_corpus(args.utterances)
    audio_s = sum(map(len, corpus)) / SR
    print(f"corpus: {len(corpus)} utterances, {audio_s:.1f} s of audio "
          f"({min(map(len, corpus)) / SR:.1f}-{max(map(len, corpus)) / SR:.1f} s); "
          f"jax backend {jax.default_backend()}, {os.cpu_count()} CPUs")

    run_ours(corpus, args.batch_size)
    reference(corpus[0], sampling_rate=SR)
    for audio in corpus:
        fbank(audio, SR)

    t = best_times(
        {
            "ours": lambda: run_ours(corpus, args.batch_size),
            "single": lambda: [fbank(a, SR) for a in corpus],
            "ref": lambda: [reference(a, sampling_rate=SR) for a in corpus],
        },
        args.repeats,
    )
    t_ours, t_single, t_ref = t["ours"], t["single"], t["ref"]

    ours, single, ref = audio_s / t_ours, audio_s / t_single, audio_s / t_ref
    print(f"ours (fbank_batch, batch {args.batch_size}, bucketed): {t_ours:.3f} s -> {ours:.0f} s audio/s")
    print(f"ours (fbank, one utterance per call):      {t_single:.3f} s -> {single:.0f} s audio/s")
    print(f"reference (Speech2TextFeatureExtractor):   {t_ref:.3f} s -> {ref:.0f} s audio/s")
    print(f"speedup = ours/reference = {ours / ref:.1f}x (per-utterance fbank: {single / ref:.1f}x)")


if __name__ == "__main__":
    main()
