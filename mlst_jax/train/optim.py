"""Optimizer and learning-rate schedules with fairseq's semantics, built from a plain config."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

_REQUIRED = object()
_TRAINED, _FROZEN = "trained", "frozen"  # multi_transform labels of a trainable mask


def _get(cfg: Any, name: str, default: Any = _REQUIRED) -> Any:
    value = cfg.get(name, default) if isinstance(cfg, Mapping) else getattr(cfg, name, default)
    if value is _REQUIRED:
        raise ValueError(f"optimizer config is missing {name!r}")
    return value


def inverse_sqrt_schedule(lr: float, warmup_updates: int, warmup_init_lr: float = 1e-7) -> optax.Schedule:
    """fairseq's `inverse_sqrt`: linear warmup from `warmup_init_lr` to `lr` over `warmup_updates` updates,
    then `lr * sqrt(warmup_updates / step)`. `step` counts finished updates (0 for the first update)."""
    if warmup_updates <= 0:
        raise ValueError(f"inverse_sqrt needs warmup_updates > 0, got {warmup_updates}")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = warmup_init_lr + step * (lr - warmup_init_lr) / warmup_updates
        decay = lr * jnp.sqrt(warmup_updates / jnp.maximum(step, 1.0))
        return jnp.where(step < warmup_updates, warm, decay)
    return schedule


def make_schedule(cfg: Any) -> optax.Schedule:
    """The learning-rate schedule named by `cfg.schedule`: "inverse_sqrt" (default), "constant" or "cosine".

    "constant" and "cosine" warm up linearly from `warmup_init_lr` over `warmup_updates` (if > 0); "cosine"
    then decays to `min_lr` (default 0) at `max_updates` updates (counted from the start).
    `schedule_start` (default 0): the update the schedule starts at; before it the schedule's first learning rate
    applies (a run continued from another restarts its schedule there, `init.schedule = "restart"`).
    """
    start = int(_get(cfg, "schedule_start", 0))
    if start:
        inner = make_schedule({**dict(cfg), "schedule_start": 0})
        return lambda step: inner(jnp.maximum(jnp.asarray(step) - start, 0))
    name = _get(cfg, "schedule", "inverse_sqrt")
    lr = float(_get(cfg, "lr"))
    warmup = int(_get(cfg, "warmup_updates", 4000 if name == "inverse_sqrt" else 0))
    init = float(_get(cfg, "warmup_init_lr", 1e-7))
    if name == "inverse_sqrt":
        return inverse_sqrt_schedule(lr, warmup, init)
    if name == "constant":
        if warmup <= 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules([optax.linear_schedule(init, lr, warmup), optax.constant_schedule(lr)],
                                    [warmup])
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(init if warmup else lr, lr, warmup, int(_get(cfg, "max_updates")),
                                                  float(_get(cfg, "min_lr", 0.0)))
    raise ValueError(f"unknown schedule {name!r}; known: inverse_sqrt, constant, cosine")


def make_optimizer(cfg: Any, trainable_mask: Any = None) -> optax.GradientTransformation:
    """Optax optimizer from a dict or attribute-style config.

    Fields: `optimizer` ("adam"; "adamw" is the same: fairseq's Adam decays weights decoupled), `lr`,
    `betas` (0.9, 0.98), `eps` (1e-8), `weight_decay` (0), `clip_norm` (10.0; 0 turns clipping off), the
    schedule fields of `make_schedule`, and `grad_accum` (1): with k > 1 the optimizer is wrapped in
    `optax.MultiSteps`, which averages k micro-batch gradients and updates on every k-th call (zero updates
    otherwise). Clipping applies to the averaged gradient. The learning rate is injected into the optimizer
    state, where `current_lr` reads it.

    `trainable_mask` (a pytree of bools like the parameters, e.g. from `mlst_jax.finetune.lna.trainable_mask`)
    freezes the False leaves: they get zero updates and have no optimizer state (no Adam moments, no
    accumulated gradients); clipping and weight decay see the trained leaves only. None, or a mask that
    trains everything, gives the plain optimizer.
    """
    tx = _plain_optimizer(cfg)
    if trainable_mask is None:
        return tx
    flags = jax.tree.leaves(trainable_mask)
    if not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise ValueError("trainable_mask must hold Python or numpy bools, one per parameter leaf")
    if not any(flags):
        raise ValueError("trainable_mask freezes every parameter: nothing to train")
    if all(flags):
        return tx
    labels = jax.tree.map(lambda f: _TRAINED if f else _FROZEN, trainable_mask)
    return optax.multi_transform({_TRAINED: tx, _FROZEN: optax.set_to_zero()}, labels)


def optimizer_of(c, trainable_mask: Any = None, schedule_start: int = 0) -> optax.GradientTransformation:
    """`make_optimizer` of an experiment config's `optim` fields; the schedule starts at step `schedule_start`
    (see `init.schedule`) and a cosine ends at `train.max_updates`."""
    if schedule_start and c.train.max_updates <= schedule_start:
        raise ValueError(f"train.max_updates={c.train.max_updates} must be above the step the run continues from "
                         f"({schedule_start})")
    left = c.train.max_updates - schedule_start
    if schedule_start and c.optim.schedule == "cosine" and c.optim.warmup_updates >= left:
        raise ValueError(f"optim.warmup_updates={c.optim.warmup_updates} must be below the {left} updates this run "
                         f"continues for (train.max_updates={c.train.max_updates} from step {schedule_start}) for the "
                         f"cosine schedule")
    k = max(1, c.optim.grad_accum)  # the schedule counts optimizer updates
    return make_optimizer({**c.optim.to_dict(), "max_updates": left, "schedule_start": schedule_start // k},
                          trainable_mask)


def _plain_optimizer(cfg: Any) -> optax.GradientTransformation:
    name = _get(cfg, "optimizer", "adam")
    if name not in ("adam", "adamw"):
        raise ValueError(f"unknown optimizer {name!r}; known: adam, adamw")
    b1, b2 = (float(b) for b in _get(cfg, "betas", (0.9, 0.98)))
    eps, wd = float(_get(cfg, "eps", 1e-8)), float(_get(cfg, "weight_decay", 0.0))
    adam = optax.inject_hyperparams(optax.adamw)(learning_rate=make_schedule(cfg), b1=b1, b2=b2, eps=eps,
                                                 weight_decay=wd)
    clip = float(_get(cfg, "clip_norm", 10.0))
    tx = optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam
    k = int(_get(cfg, "grad_accum", 1))
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
    return tx


def current_lr(opt_state: Any) -> jax.Array:
    """The learning rate of the last update (of the first, before any) from an injected-hyperparameter state;
    NaN when the optimizer has none."""
    states = jax.tree.leaves(opt_state, is_leaf=lambda n: isinstance(getattr(n, "hyperparams", None), dict))
    lrs = [n.hyperparams["learning_rate"] for n in states
           if isinstance(getattr(n, "hyperparams", None), dict) and "learning_rate" in n.hyperparams]
    return jnp.asarray(lrs[0] if lrs else jnp.nan, jnp.float32)
