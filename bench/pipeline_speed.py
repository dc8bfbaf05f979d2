"""Input pipeline throughput vs the training step's consumption rate on the same batches.

    python -m bench.pipeline_speed [--utterances 800] [--features audio|fbank] [--workdir DIR]

Writes a synthetic 3-language MuST-C corpus (utterances of 1-12 s, shared source audio), prepares it as
TFDS ArrayRecord (``audio`` int16, or ``fbank`` with ``--features fbank``), and runs the default training
pipeline (frame budget 40,000, buckets of 128 frames, stratified by language, utterance CMVN, SpecAugment
``ld``, on-the-fly fbank for audio). Then:

* pipeline: examples/s over ``--epochs`` epochs, after a warm-up epoch that compiles fbank for every shape;
* train step: examples/s of a jitted forward + backward + Adam step of a tiny S2T Transformer (d=96, 3
  encoder / 2 decoder layers, conv 128 channels, vocab ~200) on the batches the pipeline produced, after
  compiling every batch shape.

Prints both rates and the headroom ratio (pipeline examples/s ÷ train-step examples/s).
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlst_jax.data.pipeline import make_train_pipeline

from mlst_jax.data.batch_shapes import PipelineConfig
from mlst_jax.data.tfds_builders import MustC, prepare
from mlst_jax.data.vocab import train_vocab
from mlst_jax.data.writers import Talk, write_mustc
from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.models.losses import label_smoothed_nll

LANGS = ("de", "es", "fr")
WORDS = ("haus katze hund buch wasser auto mann frau kind stadt casa gato perro libro agua coche hombre mujer "
         "maison chat chien livre eau voiture homme femme enfant ville rot blau gross klein neu alt").split()


def corpus(root: Path, n: int, seed: int = 0) -> dict[str, list[str]]:
    """Writes ``n`` utterances per direction en-{de,es,fr} (train split); returns the target texts."""
    rng = np.random.default_rng(seed)
    talks, texts = [], {lang: [] for lang in LANGS}
    per_talk = 25
    for t in range(0, n, per_talk):
        segments = []
        for _ in range(min(per_talk, n - t)):
            samples = int(rng.uniform(1.0, 12.0) * 16000)
            x = 0.1 * np.sin(np.arange(samples) * 2 * np.pi * rng.uniform(100, 300) / 16000)
            wave = (x + 0.03 * rng.standard_normal(samples)).astype(np.float32)
            words = max(1, int(samples / 16000 * 2.5))
            tgt = {lang: " ".join(rng.choice(WORDS, words)) for lang in LANGS}
            for lang in LANGS:
                texts[lang].append(tgt[lang])
            segments.append((wave, "source text", tgt))
        talks.append(Talk(f"talk_{t // per_talk}", f"spk_{t // per_talk}", segments))
    write_mustc(root, [f"en-{lang}" for lang in LANGS], "train", talks)
    return texts


def tiny_model(vocab_size: int) -> S2TConfig:
    return S2TConfig(vocab_size=vocab_size, d_model=96, encoder_layers=3, encoder_ffn_dim=256,
                     encoder_attention_heads=4, decoder_layers=2, decoder_ffn_dim=256, decoder_attention_heads=4,
                     conv_channels=128, dropout=0.1, attention_dropout=0.0, activation_dropout=0.1,
                     tie_word_embeddings=True)


def flat(batch: dict) -> dict:
    """[n_groups, b, ...] model inputs -> [n_groups * b, ...]."""
    keys = ("features", "feature_lengths", "decoder_input", "target", "loss_weights")
    lead = batch["valid"].ndim
    return {k: batch[k].reshape(-1, *batch[k].shape[lead:]) for k in keys}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=800, help="per language")
    ap.add_argument("--features", choices=("audio", "fbank"), default="audio")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--read-threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="keep the corpus here (default: a temporary folder)")
    args = ap.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        texts = corpus(work / "manual", args.utterances)
        suffix = "" if args.features == "audio" else ".fbank"
        for lang in LANGS:
            prepare("mustc", work / "manual", work / "data", f"en-{lang}{suffix}")
        sources = {lang: MustC(config=f"en-{lang}{suffix}", data_dir=os.fspath(work / "data")).as_data_source("train")
                   for lang in LANGS}
        vocab = train_vocab([t for ts in texts.values() for t in ts], work / "spm", 200, LANGS)
        print(f"corpus: {args.utterances} utterances x {len(LANGS)} directions ({args.features}), "
              f"built in {time.perf_counter() - t0:.0f} s", flush=True)

        cfg = PipelineConfig(read_threads=args.read_threads)
        pipe = make_train_pipeline(sources, vocab, cfg)
        shapes = pipe.batch_shapes()
        print(f"pipeline: {pipe.steps_per_epoch} batches/epoch, {len(shapes)} shapes: "
              + ", ".join(f"{s.features[:-1]}x{s.tokens[-1]}" for s in shapes), flush=True)
        batches = [next(pipe) for _ in range(pipe.steps_per_epoch)]  # warm-up: compiles fbank per shape
        t0 = time.perf_counter()
        examples = 0
        for _ in range(args.epochs * pipe.steps_per_epoch):
            examples += int(next(pipe)["valid"].sum())
        pipe_rate = examples / (time.perf_counter() - t0)
        pipe.close()

        model = S2TTransformer(tiny_model(len(vocab)))
        b0 = flat(batches[0])
        key = jax.random.PRNGKey(0)
        params = model.init(key, b0["features"][:1], b0["feature_lengths"][:1], b0["decoder_input"][:1])["params"]
        tx = optax.adam(1e-3)
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state, b, rng):
            def loss_fn(p):
                logits = model.apply({"params": p}, b["features"], b["feature_lengths"], b["decoder_input"],
                                     deterministic=False, rngs={"dropout": rng})
                loss, _ = label_smoothed_nll(logits, b["target"], b["loss_weights"], 0.1)
                return loss / jnp.maximum(b["loss_weights"].sum(), 1.0)

            grads = jax.grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        t0 = time.perf_counter()
        for s in shapes:  # compile every shape once
            b = next(x for x in batches if x["features"].shape == s.features and x["target"].shape == s.tokens)
            jax.block_until_ready(step(params, opt_state, flat(b), key))
        print(f"train step: compiled {len(shapes)} shapes in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        examples = 0
        for i, b in enumerate(batches):
            params, opt_state = step(params, opt_state, flat(b), jax.random.fold_in(key, i))
            examples += int(b["valid"].sum())
        jax.block_until_ready(params)
        train_rate = examples / (time.perf_counter() - t0)

    n_valid = sum(int(b["valid"].sum()) for b in batches)
    frames = sum(int(b["feature_lengths"].sum()) for b in batches)
    capacity = sum(b["features"].size // 80 for b in batches)
    print(f"mean utterance: {frames / n_valid:.0f} frames; batches: {n_valid / sum(b['valid'].size for b in batches):.0%}"
          f" of rows real, {frames / capacity:.0%} of frames real; jax devices: {jax.devices()[0].platform} x "
          f"{jax.device_count()}, cpu cores: {os.cpu_count()}")
    print(f"pipeline:   {pipe_rate:8.1f} examples/s ({args.features}, read_threads={args.read_threads})")
    print(f"train step: {train_rate:8.1f} examples/s (tiny S2T Transformer, fp32)")
    print(f"headroom = pipeline / train step = {pipe_rate / train_rate:.2f}x")


if __name__ == "__main__":
    main()
