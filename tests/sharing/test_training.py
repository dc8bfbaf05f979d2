"""End to end on the synthetic corpus: train a shared model, differentiate it by gradient similarity up to a
budget (parameters and Adam moments split), continue training the differentiated model, evaluate per language."""
import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from mlst_jax.sharing import base_shapes
from mlst_jax.sharing.training import differentiate, load_source
from mlst_jax.train.checkpoint import Checkpointer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LANGS = ("de", "es")


def synth_tiny():
    spec = importlib.util.spec_from_file_location("synth_tiny", ROOT / "configs" / "synth_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from mlst_jax.data.synthetic.corpus import synthesize_corpus

    root = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(root, (16, 4, 4), workers=1, progress=False)
    return root, tmp_path_factory.mktemp("tfds")


def config(corpus, max_updates, **sharing):
    c = synth_tiny()
    c.data.manual_dir, c.data.data_dir = map(str, corpus)
    c.data.tgt_langs = LANGS
    c.data.max_frames, c.data.frame_buckets, c.data.token_buckets = 384, (384,), (64,)
    c.data.max_frames_per_batch = 16 * 384
    c.train.update(max_updates=max_updates, log_every=5, checkpoint_every=10, eval_every=0, progress=False)
    c.eval.update(beam=2, max_len_b=10, batch_size=8)
    c.sharing.update(multiway_split="dev", **sharing)
    return c


@pytest.fixture(scope="module")
def shared_run(corpus, tmp_path_factory):
    from mlst_jax.train.trainer import train_and_evaluate

    workdir = tmp_path_factory.mktemp("shared")
    train_and_evaluate(config(corpus, 10), workdir)
    return workdir


def test_differentiate_then_continue(corpus, shared_run, tmp_path):
    from mlst_jax.train.trainer import evaluate, train_and_evaluate

    out = tmp_path / "diff"
    plan = differentiate(shared_run, out, 1.3, progress=False)
    src = load_source(out, LANGS)
    shared = load_source(shared_run, LANGS)
    base = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), shared.params)
    n_shared = shared.plan.num_params(base)
    assert src.step == shared.step == 10 and src.plan == plan and not plan.is_shared
    assert 1.3 * n_shared <= plan.num_params(base) <= 1.3 * n_shared + max(
        int(np.prod(x.shape)) * 2 for x in jax.tree.leaves(base))
    # every split unit is a decoder-layer unit, and its copies start equal to the shared parent
    for names, t in plan.leaves():
        if t.num_copies > 1:
            assert names[0] == "decoder" and names[1].startswith("layers_")
            x = src.params
            y = shared.params
            for k in names:
                x, y = x[k], y[k]
            for copy in range(t.num_copies):
                np.testing.assert_array_equal(x[copy], y)
    quads = (out / "analysis" / "quadruplets.csv").read_text().splitlines()
    assert quads[0] == "unit,copy,lang_j,lang_k,cosine" and len(quads) > 10

    # Adam moments were split with the parameters (the first moment of a split leaf is nonzero in every copy)
    ckpt = Checkpointer(out / "checkpoints", keep=None, async_save=False)
    meta = json.loads((out / "checkpoints" / "10" / "sharing_plan" / "metadata").read_text())
    assert meta["plan"] == plan.to_json()
    ckpt.close()

    # continue training the differentiated model, then evaluate per language
    cont = tmp_path / "continued"
    res = train_and_evaluate(config(corpus, 14, strategy="grad@1.3", init=str(out)), cont)
    assert res["step"] == 14
    after = load_source(cont, LANGS)
    assert after.plan == plan and after.step == 14
    bleu = evaluate(config(corpus, 14), cont)
    assert set(bleu) == {"de", "es", "avg"} and all(np.isfinite(v) for v in bleu.values())


def test_heuristic_from_init_and_fresh_random(corpus, shared_run, tmp_path):
    from mlst_jax.train.trainer import train_and_evaluate

    res = train_and_evaluate(config(corpus, 12, strategy="enc", init=str(shared_run)), tmp_path / "enc")
    assert res["step"] == 12
    run = load_source(tmp_path / "enc", LANGS)
    tables = run.plan.units()
    assert all(t.num_copies == (2 if u[0] == "decoder" else 1) for u, t in tables.items())
    with pytest.raises(ValueError, match="starts from a trained model"):
        train_and_evaluate(config(corpus, 2, strategy="grad@1.5"), tmp_path / "grad_fresh")


def test_iterative_schedule_differentiates_during_training(corpus, tmp_path):
    from mlst_jax.train.trainer import train_and_evaluate

    c = config(corpus, 4, strategy="grad@1.2", iterative_every=3, iterative_rounds=1)
    res = train_and_evaluate(c, tmp_path / "iterative")
    assert res["step"] == 4
    run = load_source(tmp_path / "iterative", LANGS)
    base = base_shapes(run.params, run.plan)
    shared = run.plan.shared(base, LANGS).num_params(base)
    assert run.plan.num_params(base) >= 1.2 * shared and not run.plan.is_shared
    assert (tmp_path / "iterative" / "analysis" / "step_3" / "quadruplets.csv").is_file()
    ckpt = Checkpointer(tmp_path / "iterative" / "checkpoints", keep=None, async_save=False)
    assert ckpt.restore_json(3, "sharing_plan") == run.plan.to_json()  # saved right after the split
    ckpt.close()


def test_adapter_baseline_from_shared(corpus, shared_run, tmp_path):
    """Per-language adapters added to the trained shared model; only adapters train (no Adam state for the rest)."""
    from mlst_jax.train.trainer import train_and_evaluate

    c = config(corpus, 12, strategy="adapters", init=str(shared_run))
    c.model.overrides.adapter_dim = 16
    c.finetune.trainable = "adapters"
    assert train_and_evaluate(c, tmp_path / "adapters")["step"] == 12
    run, shared = load_source(tmp_path / "adapters", LANGS), load_source(shared_run, LANGS)
    flat = dict(jax.tree_util.tree_flatten_with_path(run.params)[0])
    moved = 0
    for path, x in jax.tree_util.tree_flatten_with_path(shared.params)[0]:
        np.testing.assert_array_equal(flat.pop(path), x)  # frozen
    assert flat and all("adapter" in jax.tree_util.keystr(p) for p in flat)
    for (names, t) in run.plan.leaves():
        if any("adapter" in n for n in names):
            assert t.num_copies == 2
            moved += 1
        else:
            assert t.num_copies == 1
    assert moved > 0
