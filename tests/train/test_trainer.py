import hashlib
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from mlst_jax.evaluate import score_by_language
from mlst_jax.train.config import load_config
from mlst_jax.train.run import Run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def synth_tiny():
    return load_config(f"{ROOT / 'configs' / 'synth.py'}:tiny")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from mlst_jax.data.synthetic.corpus import synthesize_corpus

    root = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(root, (16, 4, 4), workers=1, progress=False)
    return root, tmp_path_factory.mktemp("tfds")


def config(corpus, max_updates):
    c = synth_tiny()
    c.data.manual_dir, c.data.data_dir = map(str, corpus)
    c.data.tgt_langs = ("de", "es")
    c.data.max_frames, c.data.frame_buckets, c.data.token_buckets = 384, (384,), (64,)
    c.data.max_frames_per_batch = 16 * 384  # [2 languages, 8 rows]: one row per fake device and language
    c.train.update(max_updates=max_updates, log_every=5, checkpoint_every=10, eval_every=20, progress=False)
    c.eval.update(beam=2, max_len_b=10, batch_size=8)
    return c


def params_at(workdir, step):
    with Run(workdir) as run:
        return run.params(step)


def test_resume_is_exact_and_eval_reports_bleu(corpus, tmp_path):
    from mlst_jax.train.trainer import evaluate, train_and_evaluate

    straight = train_and_evaluate(config(corpus, 20), tmp_path / "straight")
    first = train_and_evaluate(config(corpus, 10), tmp_path / "resumed")
    second = train_and_evaluate(config(corpus, 20), tmp_path / "resumed")
    assert first["step"] == 10 and second["step"] == straight["step"] == 20

    a, b = params_at(tmp_path / "straight", 20), params_at(tmp_path / "resumed", 20)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert second["train/loss"] == straight["train/loss"]

    rows = [json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20]
    for key in ("bleu_de", "bleu_es", "bleu_avg", "nll_de", "nll_es", "nll"):
        assert np.isfinite(evals[-1][key]) and np.isfinite(straight[f"eval/{key}"])
    assert list((tmp_path / "straight" / "tb").glob("events.out.tfevents.*"))

    p10 = params_at(tmp_path / "straight", 10)
    with Run(tmp_path / "straight") as run:
        assert run.averaged_steps(2) == [10, 20]
        avg = run.averaged_params(2)
    for m, x, y in zip(jax.tree.leaves(avg), jax.tree.leaves(p10), jax.tree.leaves(a)):
        np.testing.assert_allclose(m, (x.astype(np.float64) + y) / 2, rtol=1e-6, atol=1e-7)
    scores = evaluate(config(corpus, 20), tmp_path / "straight", "tst-COMMON")
    assert set(scores) == {"de", "es", "avg"} and all(np.isfinite(v) for v in scores.values())
    written = tmp_path / "straight" / "eval" / "tst-COMMON"
    for lang in ("de", "es"):
        hyps, refs = ((written / f"{lang}.{ext}").read_text().splitlines() for ext in ("hyp", "ref"))
        assert len(hyps) == len(refs) > 0 and all(refs)
        assert score_by_language({lang: (hyps, refs)})[lang]["bleu"] == scores[lang]


def test_source_metadata_is_cached_next_to_the_array_records(corpus, tmp_path, monkeypatch):
    from mlst_jax.data import pipeline as pl
    from mlst_jax.train.inputs import data_sources, source_metadata
    from mlst_jax.train.tasks import get_task

    c = config(corpus, 1)
    task = get_task(c)
    streams = task.streams()
    sources = data_sources(c, streams, "dev")
    vocab = task.load_vocab(tmp_path / "run", data_sources(c, streams, "train"))
    scanned = {l: pl.scan_source(s, vocab, l) for l, s in sources.items()}
    first = source_metadata(c, task, streams, "dev", sources, vocab)
    digest = hashlib.sha1(Path(vocab.spm_path).read_bytes()).hexdigest()[:12]
    files = sorted((Path(c.data.data_dir) / "mlst_metadata").rglob(f"*-dev-fbank-{digest}-*.npz"))
    assert [f.name.split("-dev-")[0] for f in files] == ["en-de", "en-es"]

    def no_scan(*a, **k):
        raise AssertionError("scanned although cached")
    monkeypatch.setattr(pl, "scan_source", no_scan)
    again = source_metadata(c, task, streams, "dev", sources, vocab)
    for lang in ("de", "es"):
        for m in (first[lang], again[lang]):
            np.testing.assert_array_equal(m.n_frames, scanned[lang].n_frames)
            np.testing.assert_array_equal(m.n_tokens, scanned[lang].n_tokens)
    monkeypatch.undo()
    pl.SourceMeta("audio", np.zeros(1, np.int32), np.zeros(1, np.int32), np.array(["de"])).save(files[0])
    fixed = source_metadata(c, task, streams, "dev", sources, vocab)  # a stale file (wrong size) is scanned again
    np.testing.assert_array_equal(fixed["de"].n_frames, scanned["de"].n_frames)
