"""Per-task gradients: all tasks in one vmapped call vs one gradient call per task, on the same batch.

    python -m bench.task_grad_speed [--arch s2t_transformer_m] [--langs 8] [--batch 2] [--frames 400] [--tokens 32]

Both sides compute each target language's gradient of the summed cross-entropy w.r.t. the decoder layers
(no dropout). `mlst_jax.sharing.gradients` does all tasks in one jitted call (`vmap` over tasks, the shared
encoder run once); the reference is a jitted `jax.grad` for one task, called once per task. Prints the median
times, the ratio all-tasks / Σ single-task (target ≤ 1.1) and the all-tasks call's peak memory
(XLA's memory_analysis: temporaries + arguments) against params × (tasks + 2).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import timed
from mlst_jax.models.s2t_transformer import S2TTransformer, named_config
from mlst_jax.models.params import count_params
from mlst_jax.sharing.gradients import make_task_grad_fn
from mlst_jax.sharing.plan import SharingPlan
from mlst_jax.models.losses import label_smoothed_nll


def _bytes(ma) -> tuple[int, int]:
    return int(ma.temp_size_in_bytes), int(ma.argument_size_in_bytes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="s2t_transformer_m")
    ap.add_argument("--langs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    cfg = named_config(args.arch, vocab_size=args.vocab)
    model = S2TTransformer(cfg)
    n, b, t, u = args.langs, args.batch, args.frames, args.tokens
    rng = np.random.default_rng(0)
    lens = rng.integers(t // 2, t + 1, size=b).astype(np.int32)
    lens[0] = t
    feats = rng.standard_normal((b, t, 80)).astype(np.float32) * (np.arange(t)[None, :, None] < lens[:, None, None])
    tgt = rng.integers(4, args.vocab, size=(n, b, u)).astype(np.int32)
    dec_in = np.concatenate([np.full((n, b, 1), 2, np.int32), tgt[..., :-1]], axis=-1)
    weights = np.ones((n, b, u), np.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), feats[:1], lens[:1], dec_in[0, :1])["params"]
    langs = [f"l{i}" for i in range(n)]
    plan = SharingPlan.shared(params, langs)
    batch = {k: jnp.asarray(v) for k, v in dict(features=feats, feature_lengths=lens, decoder_input=dec_in,
                                                 target=tgt, loss_weights=weights).items()}

    # -- all tasks in one call ----------------------------------------------------------------------------
    fn = make_task_grad_fn(model, plan, params)
    state = {"acc": fn.init()}

    def all_tasks():
        state["acc"] = fn.step(state["acc"], params, batch)
        jax.block_until_ready(state["acc"])

    # -- one call per task ----------------------------------------------------------------------------------
    def layers_of(p):
        return {k: v for k, v in p["decoder"].items() if k.startswith("layers_")}

    def one_task_loss(layers, p, d, y, w):
        p = {**p, "decoder": {**p["decoder"], **layers}}
        logits = model.apply({"params": p}, batch["features"], batch["feature_lengths"], d, deterministic=True)
        return label_smoothed_nll(logits, y, w, 0.0)[1]

    one_task = jax.jit(jax.grad(one_task_loss))

    def per_task():
        out = [one_task(layers_of(params), params, batch["decoder_input"][i], batch["target"][i],
                        batch["loss_weights"][i]) for i in range(n)]
        jax.block_until_ready(out)

    t_all, t_one = timed(all_tasks, args.steps), timed(per_task, args.steps)

    # -- memory ---------------------------------------------------------------------------------------------
    temp, arg = _bytes(fn.step.lower(fn.init(), params, batch).compile().memory_analysis())
    temp1, arg1 = _bytes(one_task.lower(layers_of(params), params, batch["decoder_input"][0], batch["target"][0],
                                        batch["loss_weights"][0]).compile().memory_analysis())
    n_params = count_params(params)
    n_dec = count_params(layers_of(params))
    p_bytes = 4 * n_params
    mib = 2.0 ** 20
    print(f"per-task gradients {args.arch} ({n_params / 1e6:.1f}M params, decoder layers {n_dec / 1e6:.1f}M), "
          f"{n} tasks, batch {b}x{t} frames, {u} tokens, vocab {args.vocab}; "
          f"jax devices={jax.devices()[0].platform}x{jax.device_count()}")
    print(f"all tasks in one call (vmap): {t_all * 1000:.0f} ms")
    print(f"{n} single-task calls: {t_one * 1000:.0f} ms ({t_one / n * 1000:.0f} ms each)")
    print(f"ratio all-tasks / sum of single-task = {t_all / t_one:.2f}x (target <= 1.1x)")
    print(f"peak memory, all tasks: temp {temp / mib:.0f} MiB + arguments {arg / mib:.0f} MiB = "
          f"{(temp + arg) / mib:.0f} MiB = {(temp + arg) / p_bytes:.2f} x params "
          f"(params x (tasks + 2) = {p_bytes * (n + 2) / mib:.0f} MiB)")
    print(f"peak memory, one task: temp {temp1 / mib:.0f} MiB + arguments {arg1 / mib:.0f} MiB = "
          f"{(temp1 + arg1) / p_bytes:.2f} x params")


if __name__ == "__main__":
    main()
