"""XMEF and joint speech-text XMEF parameters in the sharding rules table: every leaf's PartitionSpec against a table
stated here, and the full-size models (shapes only) really split over an fsdp=8 mesh."""
import math
import re

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mlst_jax.models import wav2vec2, xmef
from mlst_jax.models.mbart import MBartConfig
from mlst_jax.train import sharding as shd
from mlst_jax.models import joint
from mlst_jax.models.params import path_names

# Path (full match) -> logical axes; the first matching row applies.
TABLE = [
    (r".*/[qkv]_proj/kernel", ("embed", "heads")),
    (r".*/[qkv]_proj/bias", ("heads",)),
    (r".*/out_proj/kernel", ("heads", "embed")),
    (r".*/out_proj/bias", ("embed",)),
    (r".*/fc1/kernel", ("embed", "mlp")),
    (r".*/fc1/bias", ("mlp",)),
    (r".*/fc2/kernel", ("mlp", "embed")),
    (r".*/fc2/bias", ("embed",)),
    (r".*norm[^/]*/(scale|bias)", ("norm",)),
    (r"(decoder|text_encoder)/embed_tokens/embedding", ("vocab", "embed")),
    (r"(decoder|text_encoder)/embed_positions/embedding", ("positions", "embed")),
    (r"decoder/lm_head/kernel", ("embed", "vocab")),
    (r"decoder/final_logits_bias", (None, "vocab")),
    (r"encoder/feature_extractor/conv_layers_\d+/conv/kernel", ("conv_width", "embed", "conv_out")),
    (r"encoder/feature_extractor/conv_layers_\d+/conv/bias", ("conv_out",)),
    (r"encoder/feature_projection/projection/kernel", ("conv_out", "embed")),
    (r"encoder/feature_projection/projection/bias", ("embed",)),
    (r"encoder/masked_spec_embed", ("embed",)),
    (r"encoder/encoder/pos_conv_embed/weight_v", ("conv_out", "embed", "conv_width")),  # [C, C/groups, K]
    (r"encoder/encoder/pos_conv_embed/weight_g", ("norm", "norm", "norm")),
    (r"encoder/encoder/pos_conv_embed/bias", ("conv_out",)),
    (r"adaptor/layers_\d+/kernel", ("conv_width", "embed", "conv_out")),
    (r"adaptor/layers_\d+/bias", ("conv_out",)),
    (r"adaptor/proj/kernel", ("embed", "mlp")),
    (r"adaptor/proj/bias", ("mlp",)),
]
MESH_AXIS = {"embed": "fsdp", "heads": "tensor", "mlp": "tensor", "vocab": "tensor", "conv_out": "tensor"}
MESHES = {"fsdp8": (1, 8, 1), "data2_fsdp4": (2, 4, 1), "data2_fsdp2_tensor2": (2, 2, 2)}

TINY = xmef.XMEFConfig(
    encoder=wav2vec2.named_config("large_lv60", hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=24, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                                  num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2),
    decoder=MBartConfig(vocab_size=30, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=12, decoder_ffn_dim=12, max_position_embeddings=14,
                        tie_word_embeddings=False, add_final_logits_bias=True),
    adaptor_layers=2, adaptor_layer_norm=True, adaptor_proj=True)


@pytest.fixture(scope="module")
def full():
    return xmef.abstract_params(xmef.paper_config())


@pytest.fixture(scope="module")
def tiny():
    return xmef.abstract_params(TINY)


@pytest.fixture(scope="module")
def full_joint():
    return joint.abstract_params(joint.JointConfig(xmef.paper_config(), 12))


def flat(params):
    return {"/".join(path_names(path)): x for path, x in jax.tree_util.tree_leaves_with_path(params)}


def logical(name):
    for pattern, axes in TABLE:
        if re.fullmatch(pattern, name):
            return axes
    raise AssertionError(f"{name}: not in the test's table")


def expected_spec(shape, axes, mesh):
    """Each logical axis on its mesh axis, or replicated where the size is not divisible by it."""
    spec = []
    for size, a in zip(shape, axes):
        target = MESH_AXIS.get(a)
        spec.append(target if target and size % mesh.shape[target] == 0 else None)
    return P(*spec)


def check_specs(params, mesh):
    specs = flat(shd.param_specs(params, mesh))
    for name, x in flat(params).items():
        assert specs[name] == expected_spec(x.shape, logical(name), mesh), name


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_specs_follow_table(full, full_joint, mesh_name):
    mesh = shd.make_mesh(*MESHES[mesh_name])
    check_specs(full, mesh)
    check_specs({k: full_joint[k] for k in ("text_encoder", "shared_layers")}, mesh)
    assert set(full_joint) == {"encoder", "adaptor", "text_encoder", "shared_layers", "decoder"}


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_tiny_xmef_placed_by_table(tiny, mesh_name):
    """The optional parts (adaptor projection and LayerNorm, lm_head, final_logits_bias) on real arrays."""
    mesh, abstract = shd.make_mesh(*MESHES[mesh_name]), tiny
    names = flat(abstract)
    assert {"adaptor/proj/kernel", "adaptor/layer_norm/scale", "decoder/lm_head/kernel",
            "decoder/final_logits_bias"} <= set(names)
    check_specs(abstract, mesh)
    shardings = shd.param_shardings(abstract, mesh)
    params = jax.jit(lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract),
                     out_shardings=shardings)()
    for name, x in flat(params).items():
        assert x.sharding.spec == expected_spec(x.shape, logical(name), mesh), name
    kernel = flat(params)["adaptor/layers_0/kernel"]  # [3, 8, 16]: input channels over fsdp
    assert {s.data.shape[1] for s in kernel.addressable_shards} == {8 // mesh.shape["fsdp"]}


@pytest.mark.parametrize("which", ["xmef", "joint"])
def test_full_size_fsdp8_memory(full, full_joint, which):
    params = full if which == "xmef" else full_joint
    mesh = shd.make_mesh(fsdp=8)
    specs = flat(shd.param_specs(params, mesh))
    total = replicated = per_device = 0
    for name, x in flat(params).items():
        assert x.dtype == jnp.float32
        size, shard = math.prod(x.shape), math.prod(NamedSharding(mesh, specs[name]).shard_shape(x.shape))
        total, per_device = total + size, per_device + shard
        if shard == size:
            replicated += size
    assert per_device * 4 <= total * 4 / 8 + replicated * 4
    assert replicated < 0.01 * total, (replicated, total)
    # The fallbacks left are small leaves (the 1-channel input of the first feature-extractor conv).
    report = shd.sharding_report(params, mesh)
    sizes = {name: math.prod(x.shape) for name, x in flat(params).items()}
    assert report and all(sizes[line.split(":")[0]] < 1e-4 * total for line in report), report
