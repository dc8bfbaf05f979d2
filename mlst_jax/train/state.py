"""Training state: parameters and optimizer state created directly in their sharded layout."""
from __future__ import annotations

from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from mlst_jax.models.params import path_names
from mlst_jax.train import sharding as shd


@flax.struct.dataclass
class TrainState:
    """step (int32 scalar), params, opt_state, rng (raw uint32 PRNG key; dropout keys are folded from it)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


# The batch keys a model's `__call__` takes, in this order (those the batch has).
MODEL_INPUTS = ("features", "feature_lengths", "src_tokens", "decoder_input")


def model_inputs(example_batch_shapes: Mapping[str, Any]) -> list[jax.Array]:
    """Single-example stand-ins for the model inputs of a batch (any leading dims, full-length features)."""
    rows = len(example_batch_shapes["feature_lengths" if "feature_lengths" in example_batch_shapes else "valid"].shape)

    def one(name):
        x = example_batch_shapes[name]
        return jnp.zeros((1,) + tuple(x.shape[rows:]), x.dtype)
    out = {k: one(k) for k in MODEL_INPUTS if k in example_batch_shapes}
    if "feature_lengths" in out:
        out["feature_lengths"] = jnp.full((1,), out["features"].shape[1], jnp.int32)
    return [out[k] for k in MODEL_INPUTS if k in out]


def _init_fn(model, tx: optax.GradientTransformation, example_batch_shapes: Mapping[str, Any], plan=None):
    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        params = model.init({"params": init_rng}, *model_inputs(example_batch_shapes))["params"]
        if plan is not None:
            params = plan.expand(params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=state_rng)
    return init


def abstract_params(model, example_batch_shapes: Mapping[str, Any]) -> Any:
    """ShapeDtypeStructs of the model's plain (unshared) parameters."""
    return jax.eval_shape(lambda rng: model.init({"params": rng}, *model_inputs(example_batch_shapes))["params"],
                          jax.random.PRNGKey(0))


def state_shardings(abstract_state: TrainState, mesh: Mesh) -> TrainState:
    """NamedShardings for a (possibly abstract) TrainState: params by the logical rules, optimizer-state leaves
    shaped like a parameter (Adam moments, accumulated gradients) like that parameter, the rest replicated."""
    p_shard = shd.param_shardings(abstract_state.params, mesh)
    by_path = {path_names(path): (x.shape, s) for (path, x), s in zip(
        jax.tree_util.tree_flatten_with_path(abstract_state.params)[0], jax.tree.leaves(p_shard))}
    rep = shd.replicated(mesh)

    def like_param(path, x):
        names = path_names(path)
        for i in range(len(names)):
            shape, s = by_path.get(names[i:], (None, None))
            if shape is not None and tuple(shape) == tuple(x.shape):
                return s
        return rep
    opt = jax.tree_util.tree_map_with_path(like_param, abstract_state.opt_state)
    return TrainState(step=rep, params=p_shard, opt_state=opt, rng=rep)


def abstract_train_state(model, tx: optax.GradientTransformation, rng: jax.Array,
                         example_batch_shapes: Mapping[str, Any], mesh: Mesh, plan=None) -> TrainState:
    """TrainState of jax.ShapeDtypeStructs carrying their target shardings (e.g. a checkpoint-restore target).

    `example_batch_shapes` maps "features", "feature_lengths" and "decoder_input" to arrays or
    ShapeDtypeStructs of any batch shape. With a SharingPlan, parameters have its stored layout.
    """
    shapes = jax.eval_shape(_init_fn(model, tx, example_batch_shapes, plan), rng)
    shards = state_shardings(shapes, mesh)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shards)


def create_train_state(model, tx: optax.GradientTransformation, rng: jax.Array,
                       example_batch_shapes: Mapping[str, Any], mesh: Mesh,
                       compiler_options: Mapping[str, Any] | None = None, plan=None) -> TrainState:
    """Initializes a TrainState whose every leaf is created in its sharded layout on `mesh` (no unsharded copy).

    `rng` is split into the parameter-init key and the state's dropout key. Shardings of the result:
    `shardings_of(state)`. `compiler_options` (XLA debug options) are passed to `jax.jit`. With a
    SharingPlan, every copy of a parameter starts from the same initial values.
    """
    init = _init_fn(model, tx, example_batch_shapes, plan)
    shards = shardings_of(abstract_train_state(model, tx, rng, example_batch_shapes, mesh, plan))
    return jax.jit(init, out_shardings=shards, compiler_options=compiler_options)(rng)


def shardings_of(tree: Any) -> Any:
    """The `.sharding` of every leaf (arrays or ShapeDtypeStructs)."""
    return jax.tree.map(lambda x: x.sharding, tree)



def train_state_from_params(params: Any, tx: optax.GradientTransformation, rng: jax.Array,
                            target: TrainState) -> TrainState:
    """A fresh TrainState (step 0, a new optimizer state, the dropout key `create_train_state` would draw from
    `rng`) around host `params` (e.g. pretrained weights), laid out like the abstract state `target`."""
    shards = shardings_of(target)
    params = jax.tree.map(lambda x, t: np.asarray(x, t.dtype), params, target.params)
    params = jax.device_put(params, shards.params)
    state_rng = jax.random.split(rng)[1]
    return TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), shards.step), params=params,
                      opt_state=jax.jit(tx.init, out_shardings=shards.opt_state)(params),
                      rng=jax.device_put(state_rng, shards.rng))
