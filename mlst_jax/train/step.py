"""Jitted, sharded training and evaluation steps for encoder-decoder speech translation models.

A batch is a dict with `features` [..., T, F] (fbank) or [..., N] (waveforms), `feature_lengths` [...],
`decoder_input` [..., U], `target` [..., U], `loss_weights` [..., U] and optionally `valid` [...] (0 for padding
rows), where the leading dims are [B] or language-stratified [G, b]. The model is called with the batch's
`state.MODEL_INPUTS`; a joint speech-text model also takes the transcript, `src_tokens` [..., S], and a batch with
text-only rows (extra parallel text) marks its speech rows in `speech` [...]. Stratified batches are flattened
b-major ([b, G] -> [b·G]) for the shared model, which keeps every device's rows local under
`sharding.batch_sharding(..., stratified=True)`.

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
from mlst_jax.models.losses import label_smoothed_nll
from mlst_jax.train.optim import current_lr
from mlst_jax.train.state import MODEL_INPUTS, TrainState

Batch = Mapping[str, jax.Array]


def flatten_batch(batch: Batch) -> dict[str, jax.Array]:
    """[G, b, ...] stratified batches -> [b·G, ...] (row j·G + g is group g's j-th example); [B, ...] as is."""
    if batch["target"].ndim == 2:
        return dict(batch)
    return {k: jnp.swapaxes(v, 0, 1).reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def _forward(model, params, inputs, key, with_ctc: bool):
    """Decoder logits, or (logits, CTC logits, encoder mask) `with_ctc`, or (ST logits, MT logits) for a joint
    speech-text model (inputs with `src_tokens`)."""
    kw = dict(deterministic=key is None, rngs=None if key is None else {"dropout": key})
    if with_ctc:
        return model.apply({"params": params}, *inputs, method=model.with_ctc, **kw)
    return model.apply({"params": params}, *inputs, **kw)


def _inputs(batch: Batch) -> tuple[jax.Array, ...]:
    return tuple(batch[k] for k in MODEL_INPUTS if k in batch)


def _grouped_forward(model, params, plan, batch: Batch, rng: jax.Array | None, with_ctc: bool):
    """`_forward` of a stratified batch under a plan with language-specific leaves (outputs [G, b, ...])."""
    gathered, axes = plan.gather(params, batch["group_lang"])
    n_groups = batch["target"].shape[0]
    keys = None if rng is None else jax.random.split(rng, n_groups)
    return jax.vmap(lambda p, x, k: _forward(model, p, x, k, with_ctc),
                    in_axes=(axes, 0, None if rng is None else 0))(gathered, _inputs(batch), keys)


def _loss_sums(model, params, batch: Batch, label_smoothing: float, rng: jax.Array | None, plan=None,
               ctc_weight: float = 0.0) -> dict[str, jax.Array]:
    """Sums over the batch: `loss` (label smoothed), `nll`, `ntokens` (weighted target tokens), `nsentences`;
    `ctc`, `nchars` when `ctc_weight > 0` and the batch carries CTC labels; `mt_loss`, `mt_nll`, `mt_ntokens`
    when it carries `src_tokens` (a joint speech-text model: the speech loss over the rows of `speech`, when the
    batch has text-only rows, the MT loss over every row)."""
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
        out = _forward(model, params, _inputs(batch), rng, with_ctc)
    joint = "src_tokens" in batch and "features" in batch  # speech and its transcript: two outputs
    logits = out[0] if with_ctc or joint else out
    valid = batch.get("valid")
    valid = jnp.ones(batch["target"].shape[:1], jnp.float32) if valid is None else valid.astype(jnp.float32)
    weights = batch["loss_weights"].astype(jnp.float32) * valid[:, None]
    speech = weights * batch["speech"].astype(jnp.float32)[:, None] if "speech" in batch else weights
    loss_sum, nll_sum = label_smoothed_nll(logits, batch["target"], speech, label_smoothing)
    sums = {"loss": loss_sum, "nll": nll_sum, "ntokens": speech.sum(), "nsentences": valid.sum()}
    if with_ctc:
        sums["ctc"], sums["nchars"] = ctc_loss_sums(out[1], out[2], batch["ctc_labels"], batch["ctc_label_paddings"],
                                                    valid)
    if joint:
        sums["mt_loss"], sums["mt_nll"] = label_smoothed_nll(out[1], batch["target"], weights, label_smoothing)
        sums["mt_ntokens"] = weights.sum()
    return sums


def make_train_step(model, tx: optax.GradientTransformation, *, mesh: Mesh, state_shardings: TrainState,
                    batch_shardings: Any, label_smoothing: float = 0.0, donate: bool = True,
                    compiler_options: Mapping[str, Any] | None = None, plan=None, ctc_weight: float = 0.0,
                    mt_weight: float = 0.0, sums_fn: Callable = None) -> Callable[[TrainState, Batch], Any]:
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
    loss per transcript character is added with this weight (metric `ctc`). A joint speech-text model (batches
    with `src_tokens`) adds `mt_weight` times the MT loss on the same targets (metrics `mt_loss`, `mt_nll`,
    `mt_ntokens`; text-only rows, `speech` 0, count for MT only).
    `sums_fn`: a model family's own sums, with `_loss_sums`'s signature and keys (default: `_loss_sums`, the
    label-smoothed translation loss).
    """
    sums_fn = sums_fn or _loss_sums
    def step(state: TrainState, batch: Batch):
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            sums = sums_fn(model, params, batch, label_smoothing, rng, plan, ctc_weight)
            ntokens = jnp.maximum(sums["ntokens"], 1.0)
            metrics = {"loss": sums["loss"] / ntokens, "nll": sums["nll"] / ntokens, "ntokens": sums["ntokens"],
                       "nsentences": sums["nsentences"]}
            objective = metrics["loss"]
            if "ctc" in sums:
                metrics["ctc"] = sums["ctc"] / jnp.maximum(sums["nchars"], 1.0)
                objective = objective + ctc_weight * metrics["ctc"]
            if "mt_loss" in sums:
                mt_tokens = jnp.maximum(sums["mt_ntokens"], 1.0)
                metrics["mt_loss"], metrics["mt_nll"] = sums["mt_loss"] / mt_tokens, sums["mt_nll"] / mt_tokens
                metrics["mt_ntokens"] = sums["mt_ntokens"]
                objective = objective + mt_weight * metrics["mt_loss"]
            return objective, metrics

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = jax.lax.with_sharding_constraint(grads, state_shardings.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads), "lr": current_lr(opt_state)}
        return new_state, metrics

    return jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, shd.replicated(mesh)),
                   donate_argnums=(0,) if donate else (), compiler_options=compiler_options)


def make_eval_step(model, *, mesh: Mesh, param_shardings: Any, batch_shardings: Any,
                   compiler_options: Mapping[str, Any] | None = None, plan=None,
                   sums_fn: Callable = None) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """Jitted deterministic `(params, batch) -> {"nll_sum", "ntokens"}` (sums over the global batch)."""
    sums_fn = sums_fn or _loss_sums

    def step(params, batch: Batch):
        sums = sums_fn(model, params, batch, 0.0, None, plan)
        return {"nll_sum": sums["nll"], "ntokens": sums["ntokens"]}

    return jax.jit(step, in_shardings=(param_shardings, batch_shardings), out_shardings=shd.replicated(mesh),
                   compiler_options=compiler_options)
