"""Jitted, sharded training and evaluation steps for encoder-decoder speech translation models.

A batch is a dict with `features` [..., T, F], `feature_lengths` [...], `decoder_input` [..., U], `target`
[..., U], `loss_weights` [..., U] and optionally `valid` [...] (0 for padding rows), where the leading dims
are [B] or language-stratified [G, b]. Stratified batches are flattened b-major ([b, G] -> [b·G]) for the
shared model, which keeps every device's rows local under `sharding.batch_sharding(..., stratified=True)`.

With a `SharingPlan` that has language-specific leaves, a stratified batch (which then also carries
`group_lang` [G], the language index of every group) runs the model under `jax.vmap` over its groups: a
language-specific leaf is gathered per group ([G, ...], batched einsums) and shared leaves are broadcast.

With `ctc_weight > 0` (a model with a CTC layer) and batches carrying `ctc_labels` / `ctc_label_paddings`
[..., N], the loss adds `ctc_weight` times the encoder's CTC loss per transcript character
(`mlst_jax.train.ctc`); evaluation steps score the translation loss only.

Mixed precision: a model whose config has `dtype="bfloat16"` computes in bfloat16 while its parameters,
gradients and optimizer state stay float32; logits and the loss are float32.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from mlst_jax.train import sharding as shd
from mlst_jax.train.ctc import ctc_loss_sums
from mlst_jax.train.losses import label_smoothed_nll
from mlst_jax.train.optim import current_lr
from mlst_jax.train.state import TrainState

Batch = Mapping[str, jax.Array]


def flatten_batch(batch: Batch) -> dict[str, jax.Array]:
    """[G, b, ...] stratified batches -> [b·G, ...] (row j·G + g is group g's j-th example); [B, ...] as is."""
    if batch["target"].ndim == 2:
        return dict(batch)
    return {k: jnp.swapaxes(v, 0, 1).reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def _forward(model, params, feats, lens, tokens, key, with_ctc: bool):
    """Decoder logits, or (logits, CTC logits, encoder mask) `with_ctc`."""
    kw = dict(deterministic=key is None, rngs=None if key is None else {"dropout": key})
    if with_ctc:
        return model.apply({"params": params}, feats, lens, tokens, method=model.with_ctc, **kw)
    return model.apply({"params": params}, feats, lens, tokens, **kw)


def _grouped_forward(model, params, plan, batch: Batch, rng: jax.Array | None, with_ctc: bool):
    """`_forward` of a stratified batch under a plan with language-specific leaves (outputs [G, b, ...])."""
    gathered, axes = plan.gather(params, batch["group_lang"])
    n_groups = batch["target"].shape[0]
    keys = None if rng is None else jax.random.split(rng, n_groups)
    return jax.vmap(lambda p, f, l, t, k: _forward(model, p, f, l, t, k, with_ctc),
                    in_axes=(axes, 0, 0, 0, None if rng is None else 0))(
        gathered, batch["features"], batch["feature_lengths"], batch["decoder_input"], keys)


def _loss_sums(model, params, batch: Batch, label_smoothing: float, rng: jax.Array | None, plan=None,
               ctc_weight: float = 0.0):
    """(smoothed loss sum, NLL sum, weighted token count, sentence count, CTC loss sum, CTC label count) of a
    batch; the CTC terms are 0 unless `ctc_weight > 0` and the batch carries CTC labels."""
    with_ctc = ctc_weight > 0 and "ctc_labels" in batch
    if plan is not None and not plan.is_shared:
        if batch["target"].ndim != 3 or "group_lang" not in batch:
            raise ValueError("a sharing plan with language-specific parameters needs language-stratified batches "
                             "([G, b, ...] with group_lang)")
        out = _grouped_forward(model, params, plan, batch, rng, with_ctc)
        batch = {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items() if k != "group_lang"}
        out = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out)
    else:
        batch = flatten_batch({k: v for k, v in batch.items() if k != "group_lang"})
        out = _forward(model, params, batch["features"], batch["feature_lengths"], batch["decoder_input"], rng,
                       with_ctc)
    logits = out[0] if with_ctc else out
    valid = batch.get("valid")
    valid = jnp.ones(batch["target"].shape[:1], jnp.float32) if valid is None else valid.astype(jnp.float32)
    weights = batch["loss_weights"].astype(jnp.float32) * valid[:, None]
    loss_sum, nll_sum = label_smoothed_nll(logits, batch["target"], weights, label_smoothing)
    ctc_sum = ctc_count = jnp.zeros((), jnp.float32)
    if with_ctc:
        ctc_sum, ctc_count = ctc_loss_sums(out[1], out[2], batch["ctc_labels"], batch["ctc_label_paddings"], valid)
    return loss_sum, nll_sum, weights.sum(), valid.sum(), ctc_sum, ctc_count


def make_train_step(model, tx: optax.GradientTransformation, *, label_smoothing: float, mesh: Mesh,
                    state_shardings: TrainState, batch_shardings: Any, donate: bool = True,
                    compiler_options: Mapping[str, Any] | None = None, plan=None,
                    ctc_weight: float = 0.0) -> Callable[[TrainState, Batch], Any]:
    """Jitted `(state, batch) -> (state, metrics)` with explicit in/out shardings; donates `state` if `donate`.

    The loss is the label-smoothed cross-entropy summed over target tokens and divided by the number of
    weighted tokens in the global batch (fairseq's normalization), in nats. With gradient accumulation
    (`optax.MultiSteps`) the update averages micro-batch gradients: the token mean over all micro-batches
    when they hold equal token counts, otherwise a mean of per-micro-batch means. Dropout keys are
    `fold_in(state.rng, state.step)`; the model's dropout masks depend on the global row index only, so
    results do not depend on the mesh. Metrics (replicated scalars): `loss` and `nll` per token, `ntokens`,
    `nsentences`, `grad_norm` (global norm of this batch's gradient, before clipping and accumulation) and
    `lr` (learning rate of this update, read from the optimizer state).
    `batch_shardings` is a NamedSharding for every batch leaf (e.g. `sharding.batch_sharding(mesh)`) or a
    dict of them. `compiler_options` (XLA debug options) are passed to `jax.jit`. `plan`: the SharingPlan
    the state's parameters are laid out for (None: plain parameters). `ctc_weight > 0`: the auxiliary CTC
    loss per transcript character is added with this weight (metric `ctc`).
    """
    def step(state: TrainState, batch: Batch):
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            loss_sum, nll_sum, ntokens, nsentences, ctc_sum, nchars = _loss_sums(
                model, params, batch, label_smoothing, rng, plan, ctc_weight)
            loss = loss_sum / jnp.maximum(ntokens, 1.0)
            ctc = ctc_sum / jnp.maximum(nchars, 1.0)
            return loss + ctc_weight * ctc, (loss, nll_sum, ntokens, nsentences, ctc)

        (_, (loss, nll_sum, ntokens, nsentences, ctc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        grads = jax.lax.with_sharding_constraint(grads, state_shardings.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        metrics = {"loss": loss, "nll": nll_sum / jnp.maximum(ntokens, 1.0), "ntokens": ntokens,
                   "nsentences": nsentences, "grad_norm": optax.tree.norm(grads), "lr": current_lr(opt_state)}
        if ctc_weight > 0:
            metrics["ctc"] = ctc
        return new_state, metrics

    return jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, shd.replicated(mesh)),
                   donate_argnums=(0,) if donate else (), compiler_options=compiler_options)


def make_eval_step(model, *, mesh: Mesh, param_shardings: Any, batch_shardings: Any,
                   compiler_options: Mapping[str, Any] | None = None,
                   plan=None) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """Jitted deterministic `(params, batch) -> {"nll_sum", "ntokens"}` (sums over the global batch)."""
    def step(params, batch: Batch):
        _, nll_sum, ntokens, *_ = _loss_sums(model, params, batch, 0.0, None, plan)
        return {"nll_sum": nll_sum, "ntokens": ntokens}

    return jax.jit(step, in_shardings=(param_shardings, batch_shardings), out_shardings=shd.replicated(mesh),
                   compiler_options=compiler_options)
