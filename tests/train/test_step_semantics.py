"""What one training step computes, on one device with a tiny model: fairseq's label-smoothed loss with the
language-tag position and padding left out, dropout keys that change every step and are reproducible, and the
donation of the input state.

Convention checked (recent fairseq `label_smoothed_nll_loss`, documented in `mlst_jax/models/losses.py`):
eps_i = eps / (V - 1), loss = (1 - eps - eps_i) * nll + eps_i * smooth_loss, smooth_loss = -sum_v log p_v;
the language tag (target position 0, fairseq's `ignore_prefix_size=1`) and padding (target == pad,
fairseq's `ignore_index`) are left out. The step reports the loss summed over the remaining target tokens
and divided by their number (`make_train_step`'s documented normalization).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.train import optim, sharding as shd, state as st, step as sp
from mlst_jax.models.losses import label_smoothed_nll

EPS = 0.1
PAD, EOS = 1, 2
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
CFG = S2TConfig(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
                decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=16,
                conv_kernel_sizes=(3, 3), dropout=0.3, attention_dropout=0.1, activation_dropout=0.1)
OPT = dict(lr=1e-3, schedule="constant")
FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def fairseq_label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index, old=False):
    """fairseq.criterions.label_smoothed_cross_entropy.label_smoothed_nll_loss (reduce=True), in numpy;
    `old`: fairseq before 2020, eps_i = eps / V and loss = (1 - eps) * nll + eps_i * smooth_loss."""
    target = target[..., None]
    nll_loss = -np.take_along_axis(lprobs, target, axis=-1)
    smooth_loss = -lprobs.sum(axis=-1, keepdims=True)
    pad_mask = target == ignore_index
    nll_loss = np.where(pad_mask, 0.0, nll_loss).sum()
    smooth_loss = np.where(pad_mask, 0.0, smooth_loss).sum()
    if old:
        eps_i = epsilon / lprobs.shape[-1]
        return (1.0 - epsilon) * nll_loss + eps_i * smooth_loss, nll_loss
    eps_i = epsilon / (lprobs.shape[-1] - 1)
    loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
    return loss, nll_loss


def fairseq_criterion(logits, target, epsilon, ignore_prefix_size=1, old=False):
    """LabelSmoothedCrossEntropyCriterion.compute_loss: float64 log-softmax, the prefix (language tag) cut off.
    Returns (loss, nll, number of non-pad target tokens after the prefix)."""
    logits = np.asarray(logits, np.float64)[:, ignore_prefix_size:]
    target = np.asarray(target)[:, ignore_prefix_size:]
    lprobs = logits - logits.max(-1, keepdims=True)
    lprobs = lprobs - np.log(np.exp(lprobs).sum(-1, keepdims=True))
    loss, nll = fairseq_label_smoothed_nll_loss(lprobs, target, epsilon, PAD, old)
    return loss, nll, int((target != PAD).sum())


def weights_of(target):
    """The pipeline's loss weights: 1 on real target tokens, 0 at the language tag (position 0) and padding."""
    w = (np.asarray(target) != PAD).astype(np.float32)
    w[:, 0] = 0.0
    return w


def test_label_smoothed_nll_matches_fairseq_formula():
    r = np.random.RandomState(0)
    V = 7
    # [lang tag, tokens..., eos, pad...]; the last row is all padding
    target = np.array([[5, 3, 6, 4, EOS, PAD],
                       [6, 0, EOS, PAD, PAD, PAD],
                       [5, 4, 4, 3, 3, EOS],
                       [PAD] * 6], np.int32)
    logits = (r.randn(4, 6, V) * 3).astype(np.float32)
    loss, nll = label_smoothed_nll(jnp.asarray(logits), jnp.asarray(target), jnp.asarray(weights_of(target)), EPS)
    ref_loss, ref_nll, n = fairseq_criterion(logits, target, EPS)
    assert n == 4 + 2 + 5
    assert abs(float(loss) / n - ref_loss / n) < 1e-6 and abs(float(nll) / n - ref_nll / n) < 1e-6
    assert abs(float(loss) - ref_loss) < 1e-6 * abs(ref_loss) and abs(float(nll) - ref_nll) < 1e-6 * ref_nll
    # the example tells the conventions apart: older fairseq's (1 - eps) nll + eps / V * smooth_loss, and a loss
    # that counts the language tag, differ by far more than the tolerance
    old, _, _ = fairseq_criterion(logits, target, EPS, old=True)
    assert abs(old - ref_loss) / n > 1e-3
    with_tag, _, _ = fairseq_criterion(logits, target, EPS, ignore_prefix_size=0)
    assert abs(with_tag - ref_loss) / n > 1e-2
    # eps = 0 is the plain NLL
    loss0, nll0 = label_smoothed_nll(jnp.asarray(logits), jnp.asarray(target), jnp.asarray(weights_of(target)), 0.0)
    assert abs(float(loss0) - float(nll0)) < 1e-6 * float(nll0)
    # logits at ignored positions (tag, padding) do not matter
    moved = logits.copy()
    moved[:, 0] += 50 * r.randn(4, V).astype(np.float32)
    moved[target == PAD] += 50 * r.randn(int((target == PAD).sum()), V).astype(np.float32)
    assert float(label_smoothed_nll(jnp.asarray(moved), jnp.asarray(target), jnp.asarray(weights_of(target)),
                                    EPS)[0]) == float(loss)


def make_batch(seed=0, B=4, T=20, U=6):
    """Rows of 4, 2 and 5 target tokens after the language tag; row 3 is a padding row (`valid` 0) whose
    target and weights look real, so only `valid` keeps it out of the loss."""
    r = np.random.RandomState(seed)
    lengths = np.array([5, 3, 6, 4])  # tag + tokens + eos
    target = np.full((B, U), PAD, np.int32)
    for i, n in enumerate(lengths):
        target[i, :n] = np.concatenate([[r.randint(3, CFG.vocab_size)], r.randint(3, CFG.vocab_size, n - 2), [EOS]])
    decoder_input = np.where(target != PAD, np.concatenate([np.full((B, 1), EOS), target[:, :-1]], 1), PAD)
    feat_len = np.array([20, 14, 17, 20], np.int32)
    feats = r.randn(B, T, 80).astype(np.float32) * (np.arange(T)[None, :, None] < feat_len[:, None, None])
    return dict(features=feats, feature_lengths=feat_len, decoder_input=decoder_input.astype(np.int32),
                target=target, loss_weights=weights_of(target), valid=np.array([1, 1, 1, 0], np.float32))


@pytest.fixture(scope="module")
def setup():
    mesh = shd.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    batch = make_batch()
    tx = optim.make_optimizer(OPT)
    out = dict(mesh=mesh, batch=batch, tx=tx)
    for name, cfg in (("dropout", CFG), ("no_dropout", CFG.replace(**NO_DROPOUT))):
        model = S2TTransformer(cfg)
        state = st.create_train_state(model, tx, jax.random.PRNGKey(0), batch, mesh, compiler_options=FAST)
        train = sp.make_train_step(model, tx, label_smoothing=EPS, mesh=mesh, state_shardings=st.shardings_of(state),
                                   batch_shardings=shd.batch_sharding(mesh), compiler_options=FAST)
        out[name] = dict(model=model, state=state, train=train)
    return out


def copy(state):
    return jax.tree.map(lambda x: x.copy(), state)


def at_step(state, step):
    return state.replace(step=jax.device_put(jnp.asarray(step, jnp.int32), state.step.sharding))


def test_train_step_loss_is_fairseq_label_smoothing(setup):
    run, batch = setup["no_dropout"], setup["batch"]
    params = jax.device_get(run["state"].params)
    _, metrics = run["train"](copy(run["state"]), batch)
    logits = run["model"].apply({"params": params}, batch["features"], batch["feature_lengths"],
                                batch["decoder_input"], deterministic=True)
    rows = batch["valid"] == 1
    ref_loss, ref_nll, n = fairseq_criterion(np.asarray(logits)[rows], batch["target"][rows], EPS)
    assert n == 4 + 2 + 5 and float(metrics["ntokens"]) == n and float(metrics["nsentences"]) == 3
    assert abs(float(metrics["loss"]) - ref_loss / n) < 1e-6, (float(metrics["loss"]), ref_loss / n)
    assert abs(float(metrics["nll"]) - ref_nll / n) < 1e-6, (float(metrics["nll"]), ref_nll / n)
    assert abs(float(metrics["loss"]) - float(metrics["nll"])) > 1e-2  # smoothing is on


def test_dropout_masks_change_every_step_and_reproduce(setup):
    batch = setup["batch"]
    on, off = setup["dropout"], setup["no_dropout"]

    def loss(run, state):
        new_state, metrics = run["train"](copy(state), batch)
        return float(metrics["loss"]), jax.device_get(new_state.params)

    s0 = on["state"]
    loss0, params0 = loss(on, s0)
    loss1, _ = loss(on, at_step(s0, 1))
    # same params and batch, the next step: new dropout masks, a different loss
    assert abs(loss1 - loss0) > 1e-3, (loss0, loss1)
    # a different dropout key (state.rng) changes the masks too
    other_rng = s0.replace(rng=jax.device_put(jax.random.PRNGKey(7), s0.rng.sharding))
    assert abs(loss(on, other_rng)[0] - loss0) > 1e-3
    # the same step and key again, and a state rebuilt from the same seed: bitwise the same loss and update
    again, params_again = loss(on, s0)
    rebuilt = st.create_train_state(on["model"], setup["tx"], jax.random.PRNGKey(0), batch, setup["mesh"],
                                    compiler_options=FAST)
    fresh, params_fresh = loss(on, rebuilt)
    assert again == loss0 == fresh
    for a, b, c in zip(jax.tree.leaves(params0), jax.tree.leaves(params_again), jax.tree.leaves(params_fresh)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    # without dropout (the same initial params) the step number does not enter the loss
    for a, b in zip(jax.tree.leaves(on["state"]), jax.tree.leaves(off["state"])):
        np.testing.assert_array_equal(a, b)
    off0, _ = loss(off, off["state"])
    off1, _ = loss(off, at_step(off["state"], 1))
    assert off0 == off1
    assert min(abs(off0 - loss0), abs(off0 - loss1)) > 1e-3


def test_train_step_donates_the_state(setup):
    run, batch = setup["dropout"], setup["batch"]
    state = copy(run["state"])
    batch = jax.device_put(batch, shd.batch_sharding(setup["mesh"]))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    leaves = jax.tree.leaves(state)
    nbytes = {p: x.nbytes for p, x in zip(paths, leaves)}
    memory = run["train"].lower(state, batch).compile().memory_analysis()
    new_state, _ = run["train"](state, batch)
    # every input buffer of the state is donated, except the one the step never reads: the injected learning
    # rate (a float32 scalar recomputed from the schedule's count), which jit drops from the executable
    kept = [p for p, x in zip(paths, leaves) if not x.is_deleted()]
    assert kept == [".opt_state[1].hyperparams['learning_rate']"], kept
    assert len(leaves) > 100  # params, Adam moments and counts, step, rng
    # and XLA aliases every donated buffer to the updated state (params, Adam moments and count, step, rng)
    donated_bytes = sum(nbytes.values()) - nbytes[kept[0]]
    assert memory.alias_size_in_bytes == donated_bytes > 100_000, (memory.alias_size_in_bytes, donated_bytes)
    assert not any(x.is_deleted() for x in jax.tree.leaves(new_state))
    assert int(new_state.step) == 1
    assert not any(x.is_deleted() for x in jax.tree.leaves(batch))  # the batch is not donated
