"""Experiment config validation: every mistake is reported with its field before anything compiles."""
import pytest

from mlst_jax.train.config import base_config, resolve_mesh, validate
from mlst_jax.train.tasks import get_task


def model_config(c):
    return get_task(c).model_config(None)


@pytest.fixture
def cfg(tmp_path):
    c = base_config()
    c.data.manual_dir = str(tmp_path)
    c.data.data_dir = str(tmp_path / "tfds")
    return c


def test_defaults_are_the_papers_recipe(cfg):
    validate(cfg, device_count=8)
    m = model_config(cfg)
    assert (m.d_model, m.encoder_layers, m.decoder_layers, m.vocab_size, m.tie_word_embeddings) == (512, 12, 6, 10000, False)
    assert (cfg.optim.lr, cfg.optim.warmup_updates, cfg.optim.clip_norm, cfg.optim.label_smoothing) == (2e-3, 10000, 10.0, 0.1)
    assert (cfg.data.max_frames_per_batch, cfg.optim.grad_accum, cfg.data.specaugment) == (40000, 8, "ld")


@pytest.mark.parametrize("field,value,message", [
    ("data.tgt_langs", ("de", "xx"), r"unknown language code\(s\) \['xx'\]"),
    ("data.tgt_langs", ("de", "de"), "without repeats"),
    ("data.manual_dir", "/no/such/dir", "data.manual_dir='/no/such/dir' does not exist"),
    ("data.data_dir", "", "data.data_dir is not set"),
    ("sharing.strategy", "grad@0.5", "budget below 1"),
    ("sharing.strategy", "random@0.9", "budget below 1"),
    ("sharing.strategy", "everything", "sharing.strategy: unknown sharing strategy 'everything'"),
    ("model.s2t.arch", "s2t_transformer_xl", "model.s2t.arch='s2t_transformer_xl'"),
    ("optim.grad_accum", 0, "optim.grad_accum=0"),
    ("mesh.tensor", 3, "does not divide the 8 devices"),
])
def test_errors_name_the_field(cfg, field, value, message):
    *path, key = field.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[key] = value
    with pytest.raises(ValueError, match=message):
        validate(cfg, device_count=8)


def test_cosine_warmup_must_end_before_training_does(cfg):
    cfg.optim.schedule, cfg.optim.warmup_updates, cfg.train.max_updates = "cosine", 150, 100
    with pytest.raises(ValueError, match="optim.warmup_updates=150 must be below train.max_updates=100 for the cosine"):
        validate(cfg)
    cfg.train.max_updates = 151
    validate(cfg)


def test_mesh_resolution(cfg):
    assert resolve_mesh(cfg, 8) == (8, 1, 1)
    cfg.mesh.fsdp, cfg.mesh.tensor = 2, 2
    assert resolve_mesh(cfg, 8) == (2, 2, 2)
    cfg.mesh.data = 4
    with pytest.raises(ValueError, match=r"data=4 × fsdp=2 × tensor=2 = 16 devices, but 8 are available"):
        resolve_mesh(cfg, 8)


def test_model_overrides(cfg):
    cfg.model.s2t.overrides.dropout = 0.3
    cfg.model.s2t.overrides.d_model = 30
    with pytest.raises(ValueError, match="d_model=30 is not divisible"):
        validate(cfg)
    cfg.model.s2t.overrides.d_model = 64
    assert model_config(cfg).dropout == 0.3
