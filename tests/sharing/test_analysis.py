"""Similarity analyses, multi-way batches from a MuST-C layout, and `mlst analyze` on a saved run."""
import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.sharing.analysis import language_similarity, layer_similarity, module_kind, write_analysis
from mlst_jax.sharing.gradients import Quadruplet, read_quadruplets_csv
from mlst_jax.train.config import load_config

ROOT = Path(__file__).resolve().parents[2]
LANGS = ("de", "es", "fr")


def q(unit, a, b, cos, copy=0):
    return Quadruplet(unit, copy, a, b, cos)


# -- analyses ---------------------------------------------------------------------------------------------

QUADS = [
    q("decoder/layers_0/self_attn/q_proj", "de", "es", 0.1), q("decoder/layers_0/self_attn/q_proj", "de", "fr", 0.3),
    q("decoder/layers_0/ffn/fc1", "de", "es", 0.5), q("decoder/layers_0/final_layer_norm", "es", "fr", -0.1),
    q("decoder/layers_1/encoder_attn/v_proj", "de", "es", 0.8), q("decoder/layers_1/ffn/fc2", "de", "es", 0.6),
    q("decoder/layers_1/ffn/fc2", "fr", "it", 0.2, copy=1),
    q("encoder/layers_0/ffn/fc1", "de", "es", 0.9),  # not a decoder layer: ignored per layer, counted per pair
]


def test_layer_similarity():
    layers = layer_similarity(QUADS)
    assert [l.layer for l in layers] == [0, 1]
    assert layers[0].count == 4 and layers[1].count == 3
    assert layers[0].mean == pytest.approx(0.2) and layers[1].mean == pytest.approx(1.6 / 3)
    assert layers[0].std == pytest.approx(np.std([0.1, 0.3, 0.5, -0.1]))
    assert layers[0].by_module == pytest.approx({"self_attn": 0.2, "ffn": 0.5, "layer_norm": -0.1})
    assert layers[1].by_module == pytest.approx({"encoder_attn": 0.8, "ffn": 0.4})
    assert module_kind("decoder/layers_3/encoder_attn_layer_norm") == "layer_norm"


def test_language_similarity():
    langs, sim = language_similarity(QUADS, ["de", "es", "fr", "it", "nl"])
    assert langs == ["de", "es", "fr", "it", "nl"]
    assert sim[0, 1] == sim[1, 0] == pytest.approx((0.1 + 0.5 + 0.8 + 0.6 + 0.9) / 5)
    assert sim[0, 2] == pytest.approx(0.3) and sim[1, 2] == pytest.approx(-0.1) and sim[2, 3] == pytest.approx(0.2)
    assert np.isnan(sim[0, 4]) and np.all(np.diag(sim) == 1.0)
    np.testing.assert_array_equal(np.nan_to_num(sim), np.nan_to_num(sim.T))
    assert language_similarity(QUADS)[0] == ["de", "es", "fr", "it"]
    with pytest.raises(ValueError, match="not in"):
        language_similarity(QUADS, ["de", "es"])


def test_write_analysis(tmp_path):
    out = write_analysis(tmp_path / "a", QUADS, ["de", "es", "fr", "it"])
    files = out["files"]
    for name in ("layer_similarity.png", "language_similarity.png"):
        assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(files["layer_similarity.csv"].open()))
    assert [r["layer"] for r in rows] == ["0", "1"] and float(rows[1]["mean_ffn"]) == pytest.approx(0.4)
    assert rows[0]["mean_encoder_attn"] == "" and int(rows[0]["quadruplets"]) == 4
    lines = list(csv.reader(files["language_similarity.csv"].open()))
    assert lines[0] == ["lang", "de", "es", "fr", "it"]
    assert float(lines[3][4]) == pytest.approx(0.2) and lines[1][4] == ""  # de-it never share a copy
    with pytest.raises(ValueError, match="no decoder-layer"):
        write_analysis(tmp_path / "b", QUADS[-1:])


# -- multi-way batches and the command on a saved run ------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from mlst_jax.data.layouts import read_text_lines
    from mlst_jax.data.synthetic.corpus import synthesize_corpus
    from mlst_jax.data.vocab import train_vocab

    root = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(root, (16, 2, 6), workers=1, progress=False)
    texts = [t for l in LANGS for t in read_text_lines(root / "mustc" / f"en-{l}" / "data" / "train" / "txt" /
                                                        f"train.{l}")]
    vocab_dir = tmp_path_factory.mktemp("vocab")
    vocab = train_vocab(texts, vocab_dir / "spm", 120, list(LANGS))
    return root, vocab, vocab_dir


def synth_tiny():
    return load_config(f"{ROOT / 'configs' / 'synth.py'}:tiny")


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """A training run's directory as the trainer leaves it (random weights, a partially split plan)."""
    from mlst_jax.models.s2t_transformer import S2TTransformer
    from mlst_jax.models.params import path_names
    from mlst_jax.sharing.plan import SharingPlan
    from mlst_jax.sharing.strategies import differentiable_units
    from mlst_jax.train.checkpoint import Checkpointer
    from mlst_jax.train.state import TrainState

    root, vocab, vocab_dir = corpus
    work = tmp_path_factory.mktemp("run")
    c = synth_tiny()
    c.data.manual_dir, c.data.data_dir, c.data.tgt_langs = str(root), str(work / "tfds"), LANGS
    c.data.vocab = str(vocab_dir / "spm")
    c.model.s2t.vocab_size = len(vocab)
    c.model.s2t.overrides.update(d_model=32, encoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, conv_channels=32,
                             encoder_attention_heads=2, decoder_attention_heads=2)
    from mlst_jax.train.tasks import get_task

    model = S2TTransformer(get_task(c).model_config(None))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 80)), jnp.full((1,), 64),
                            jnp.zeros((1, 8), jnp.int32))["params"]
    rng = np.random.default_rng(0)
    base = jax.tree_util.tree_map_with_path(
        lambda p, x: (float(path_names(p)[-1] == "scale") + 0.1 * rng.standard_normal(x.shape)).astype(np.float32),
        shapes)
    plan = SharingPlan.shared(base, LANGS)
    units = differentiable_units(plan)
    plan = plan.split(units[0], ["fr"]).split(units[-1], ["de"])
    ckpt = Checkpointer(work / "checkpoints", async_save=False)
    ckpt.save(TrainState(jnp.asarray(7, jnp.int32), plan.expand(base), {}, jax.random.PRNGKey(1)), config=c,
              sharing_plan=plan.to_json())
    ckpt.close()
    (work / "config.json").write_text(c.to_json_best_effort(indent=1))
    return work, plan


def test_mlst_analyze(run, tmp_path, capsys):
    from mlst_jax.cli import main
    from mlst_jax.sharing.strategies import differentiable_units

    work, plan = run
    out = tmp_path / "analysis"
    assert main(["analyze", "--checkpoint", str(work), "--multiway", "tst-COMMON", "--max-utterances", "5",
                 "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 7 and summary["utterances"] == 5 and set(summary["nll"]) == set(LANGS)
    assert set(summary["layer_similarity"]) == {"0", "1"}
    quads = read_quadruplets_csv(out / "quadruplets.csv")
    units = ["/".join(u) for u in differentiable_units(plan)]
    by_unit = {}
    for x in quads:
        by_unit.setdefault(x.unit, []).append((x.copy, x.lang_j, x.lang_k))
    assert list(by_unit) == units and len(quads) == 3 * len(units) - 4
    assert by_unit[units[0]] == [(0, "de", "es")] and by_unit[units[-1]] == [(1, "es", "fr")]
    assert by_unit[units[1]] == [(0, "de", "es"), (0, "de", "fr"), (0, "es", "fr")]
    assert all(-1.0 <= x.cosine <= 1.0 for x in quads)
    for name in ("layer_similarity.csv", "layer_similarity.png", "language_similarity.csv", "language_similarity.png"):
        assert (out / name).stat().st_size > 0


def test_mlst_analyze_errors(run, tmp_path, capsys):
    from mlst_jax.cli import main

    work, _ = run
    args = ["--multiway", "tst-COMMON", "--out", str(tmp_path / "x"), "--quiet"]
    assert main(["analyze", "--checkpoint", str(tmp_path / "missing"), *args]) == 2
    assert f"{tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["analyze", "--checkpoint", str(tmp_path / "empty"), *args]) == 2
    assert "no checkpoints/" in capsys.readouterr().err
    assert main(["analyze", "--checkpoint", str(work), "--step", "3", *args]) == 2
    assert "no checkpoint for step 3; saved steps: [7]" in capsys.readouterr().err
    assert main(["analyze", "--checkpoint", str(work), "--multiway", "tst-HE", "--out", str(tmp_path / "x")]) == 2
    assert "no split 'tst-HE'" in capsys.readouterr().err
    # --workdir: the older name, kept as an alias of --checkpoint
    assert main(["analyze", "--workdir", str(work), "--step", "3", *args]) == 2
    assert "no checkpoint for step 3; saved steps: [7]" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one of the two is required
        main(["analyze", *args])
    assert "the following arguments are required: --checkpoint/--workdir" in capsys.readouterr().err
