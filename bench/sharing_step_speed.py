"""Training step of a sharing plan vs the fully shared model on the same 8-language stratified batch.

    python -m bench.sharing_step_speed [--arch s2t_transformer_m] [--strategy random@3.5] [--rows 2] [--frames 400]

Both steps are the real `make_train_step` (forward, backward, Adam) at the paper's model config; the plan's
step gathers each language group's copies and runs batched einsums under `vmap`. Prints the median step
times, their ratio (plan / shared; the target is <= 1.25 for random@3.5, every decoder-layer unit split 8
ways) and the compiled memory of both (arguments = parameters + optimizer state, and temporaries).
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

from bench.common import timed
from mlst_jax.models.s2t_transformer import S2TTransformer, named_config
from mlst_jax.sharing import SharingPlan, make_plan
from mlst_jax.train import optim, sharding as shd, state as st, step as sp
from mlst_jax.train.config import MUSTC_LANGS


def batch(groups: int, rows: int, frames: int, tokens: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    lens = rng.integers(frames // 2, frames + 1, size=(groups, rows)).astype(np.int32)
    feats = rng.standard_normal((groups, rows, frames, 80)).astype(np.float32)
    feats *= np.arange(frames)[None, None, :, None] < lens[..., None, None]
    tgt = rng.integers(4, vocab, size=(groups, rows, tokens)).astype(np.int32)
    return dict(features=feats, feature_lengths=lens, decoder_input=tgt, target=tgt,
                loss_weights=np.ones((groups, rows, tokens), np.float32), valid=np.ones((groups, rows), np.int32),
                group_lang=np.arange(groups, dtype=np.int32))


def memory(step, state, b) -> tuple[float, float]:
    m = step.lower(state, b).compile().memory_analysis()
    return m.argument_size_in_bytes / 2**20, m.temp_size_in_bytes / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="s2t_transformer_m")
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--strategy", default="random@3.5")
    ap.add_argument("--rows", type=int, default=2, help="rows per language group")
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()

    cfg = named_config(args.arch, vocab_size=args.vocab, dropout=0.1)
    model = S2TTransformer(cfg)
    langs = MUSTC_LANGS
    b = batch(len(langs), args.rows, args.frames, args.tokens, args.vocab)
    mesh = shd.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    tx = optim.make_optimizer(dict(lr=1e-4, schedule="constant", clip_norm=10.0))
    shardings = shd.stratified_batch_shardings(mesh, b)

    base = st.abstract_params(model, b)
    plans = {"shared": SharingPlan.shared(base, langs), args.strategy: make_plan(args.strategy, base, langs)}
    results = {}
    for name, plan in plans.items():
        state = st.create_train_state(model, tx, jax.random.PRNGKey(0), b, mesh, plan=plan)
        step = sp.make_train_step(model, tx, label_smoothing=0.1, mesh=mesh, state_shardings=st.shardings_of(state),
                                  batch_shardings=shardings, donate=True, plan=None if plan.is_shared else plan)
        args_mb, temp_mb = memory(step, state, b)
        holder = {"state": state}

        def run():
            holder["state"], m = step(holder["state"], b)
            jax.block_until_ready(m["loss"])
        results[name] = (timed(run, args.steps), plan.num_params(base), args_mb, temp_mb)
        del holder, state

    (t0, n0, a0, m0), (t1, n1, a1, m1) = results["shared"], results[args.strategy]
    print(f"{args.arch}, {len(langs)} languages x {args.rows} rows x {args.frames} frames, {args.tokens} tokens")
    print(f"shared       : {t0 * 1e3:8.1f} ms/step  {n0 / 1e6:7.1f}M params  args {a0:8.0f} MiB  temp {m0:7.0f} MiB")
    print(f"{args.strategy:<13}: {t1 * 1e3:8.1f} ms/step  {n1 / 1e6:7.1f}M params  args {a1:8.0f} MiB  temp {m1:7.0f} MiB")
    print(f"step time ratio (plan / shared): {t1 / t0:.3f}")
    print(f"argument memory ratio: {a1 / a0:.3f} (parameter ratio {n1 / n0:.3f}); temp memory ratio {m1 / m0:.3f}")


if __name__ == "__main__":
    main()
