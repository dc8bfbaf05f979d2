"""A small jitted training loop shared by the miniature's pretraining and finetuning stages."""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np
import optax

from mlst_jax.train.optim import make_optimizer

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


def optimizer(lr: float, steps: int, warmup: int = 0, clip_norm: float = 1.0, trainable_mask: Any = None):
    """Adam (0.9, 0.98) with linear warmup and cosine decay to 0 at `steps`; frozen leaves of `trainable_mask` get no
    updates and no state (`mlst_jax.train.optim.make_optimizer`)."""
    cfg = {"lr": lr, "schedule": "cosine", "warmup_updates": warmup, "max_updates": steps, "warmup_init_lr": 0.0,
           "clip_norm": clip_norm, "betas": (0.9, 0.98), "grad_accum": 1}
    return make_optimizer(cfg, trainable_mask=trainable_mask)


def make_step(loss_fn: LossFn, tx: optax.GradientTransformation):
    """jit(params, opt_state, batch, rng) → (params, opt_state, loss, metrics); `loss_fn(params, batch, rng)`."""

    @jax.jit
    def step(params, opt_state, batch, rng):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, metrics

    return step


def fit(loss_fn: LossFn, params: Any, tx: optax.GradientTransformation, sample: Callable[[np.random.Generator], dict],
        steps: int, seed: int = 0, desc: str = "train", progress: bool = False, step_fn=None) -> tuple[Any, dict]:
    """Runs `steps` updates on batches `sample(rng)`; returns the parameters and a history
    ({"loss": [...], "seconds": wall time, "first_loss", "last_loss": mean of the last 10%}).

    Pass the `step_fn` of an earlier call (`history["step_fn"]`) to reuse its compilation (same loss, optimizer and
    shapes)."""
    step = step_fn or make_step(loss_fn, tx)
    opt_state = tx.init(params)
    rng, key = np.random.default_rng(seed), jax.random.PRNGKey(seed)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=desc, unit="step", leave=True)
    start = time.perf_counter()
    pending = []
    for i in range(steps):
        key, sub = jax.random.split(key)
        params, opt_state, loss, _ = step(params, opt_state, sample(rng), sub)
        pending.append(loss)
        if len(pending) == 25 or i == steps - 1:
            losses.extend(float(x) for x in pending)
            pending = []
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if not all(np.isfinite(losses)):
        raise FloatingPointError(f"{desc}: non-finite loss (first at step {int(np.argmin(np.isfinite(losses)))})")
    tail = max(1, steps // 10)
    history = {"loss": losses, "seconds": time.perf_counter() - start, "first_loss": losses[0] if losses else None,
               "last_loss": float(np.mean(losses[-tail:])) if losses else None, "step_fn": step}
    return params, history
