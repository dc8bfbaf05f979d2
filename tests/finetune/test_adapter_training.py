"""The Adapter baseline end to end: per-language adapters trained alone by the sharded train step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.sharing.strategies import adapter_plan
from mlst_jax.models.params import count_params
from mlst_jax.finetune import lna
from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.train import optim, sharding as shd, state as st, step as sp

CFG = S2TConfig(vocab_size=32, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
                decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=16,
                conv_kernel_sizes=(3, 3), input_feat_per_channel=8, adapter_dim=4)
pytestmark = pytest.mark.slow

FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def _batch(groups=2, b=4, t=12, u=5):
    r = np.random.RandomState(0)
    target = r.randint(3, CFG.vocab_size, (groups, b, u)).astype(np.int32)
    weights = np.ones((groups, b, u), np.float32)
    weights[..., 0] = 0.0
    return dict(features=r.randn(groups, b, t, 8).astype(np.float32),
                feature_lengths=np.full((groups, b), t, np.int32), decoder_input=target, target=target,
                loss_weights=weights, group_lang=np.arange(groups, dtype=np.int32))


def test_only_the_per_language_adapters_train():
    batch = _batch()
    model = S2TTransformer(CFG)
    base = jax.jit(model.init)(jax.random.PRNGKey(0), batch["features"][0], batch["feature_lengths"][0],
                               batch["decoder_input"][0])["params"]
    plan = adapter_plan(base, ("de", "fr"))
    mask = lna.trainable_mask(base, "adapters")
    tx = optim.make_optimizer({"lr": 1e-2, "schedule": "constant", "grad_accum": 2}, trainable_mask=mask)
    mesh = shd.make_mesh(2, 2, 1, devices=jax.devices()[:4])
    state = st.create_train_state(model, tx, jax.random.PRNGKey(0), batch, mesh, compiler_options=FAST, plan=plan)
    n_adapter = count_params(base, mask)
    moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if jnp.ndim(x) > 0)
    assert moments == 3 * 2 * n_adapter  # mu, nu, accumulated gradient; two language copies

    init = jax.device_get(state.params)
    train = sp.make_train_step(model, tx, label_smoothing=0.1, mesh=mesh, state_shardings=st.shardings_of(state),
                               batch_shardings=shd.stratified_batch_shardings(mesh, batch), compiler_options=FAST,
                               plan=plan)
    for _ in range(2):
        state, _ = train(state, batch)
    final = jax.device_get(state.params)
    for (path, a), b, trained in zip(jax.tree_util.tree_flatten_with_path(init)[0], jax.tree.leaves(final),
                                     jax.tree.leaves(mask)):
        if not trained:
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    fc2 = final["decoder"]["layers_0"]["adapter"]["fc2"]["kernel"]  # [2 copies, 4, 16], both from zeros
    assert fc2.shape == (2, 4, 16)
    assert np.abs(fc2[0]).max() > 0 and np.abs(fc2[1]).max() > 0 and np.abs(fc2[0] - fc2[1]).max() > 0
