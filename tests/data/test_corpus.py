"""Synthetic corpora in the three layouts: read-back, multi-way alignment, voices, determinism, noise and CLI."""
import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlst_jax import cli
from mlst_jax.data.layouts import read_covost2, read_europarl_st, read_mustc
from mlst_jax.data.segments import load_segment
from mlst_jax.data.synthetic import corpus
from mlst_jax.data.synthetic.corpus import (
    LAYOUT_SPLITS, LAYOUTS, PITCH_RANGE, RATE_RANGE, SIZES, VOICE_VARIANTS, Size, layout_directions,
    synthesize_corpus,
)
from mlst_jax.data.synthetic.grammar import LANGS

TGTS = [lang for lang in LANGS if lang != "en"]
PAIRS = [f"en-{t}" for t in TGTS]
SPEAKER = re.compile(r"^([a-z]{2})_(\w+)_r(\d+)_p(\d+)$")
READERS = {
    "mustc": lambda root, src, tgt, split: read_mustc(root, f"{src}-{tgt}", split, on_bad_utterance="raise"),
    "covost2": lambda root, src, tgt, split: read_covost2(root, src, tgt, split, on_bad_utterance="raise"),
    "europarl_st": lambda root, src, tgt, split: read_europarl_st(root, src, tgt, split, on_bad_utterance="raise"),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    manifest = synthesize_corpus(root, "tiny", seed=0, layouts=LAYOUTS, workers=2, progress=False)
    plan = {(g.layout, g.src): g for g in corpus._plan(SIZES["tiny"], 0, LAYOUTS, "full")}
    return root, manifest, plan


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def expected(group, split):
    return [s for u in group.splits[split] for s, _ in u.items]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_back(tiny, layout):
    root, manifest, plan = tiny
    size = SIZES["tiny"][layout]
    checked = 0
    for src, tgts in layout_directions(layout):
        group = plan[layout, src]
        for tgt in tgts:
            for split, n in zip(LAYOUT_SPLITS[layout], size):
                utts = list(READERS[layout](root / layout, src, tgt, split))
                sents = expected(group, split)
                assert len(utts) == n == len(sents)
                assert [(u.src_text, u.tgt_text) for u in utts] == [(s.text[src], s.text[tgt]) for s in sents]
                assert all(SPEAKER.match(u.speaker).group(1) == src for u in utts)
                assert manifest["layouts"][layout]["directions"][corpus._direction_name(layout, src, tgt)][split] == n
                if tgt == tgts[0]:
                    for u in utts[:: max(1, n // 4)]:
                        assert sf.info(u.audio_path).samplerate == 16000
                        audio = load_segment(u.audio_path, u.offset, u.duration)
                        assert np.sqrt(np.mean(audio**2)) > 0.01
                        assert 0.5 < u.duration < 10.0
                        assert 1.0 < len(u.src_text.split()) / u.duration < 9.0
                        checked += 1
    assert checked >= len(layout_directions(layout)) * 3 * 4


def test_mustc_multiway(tiny):
    root, _, plan = tiny
    mustc = root / "mustc"
    for split in LAYOUT_SPLITS["mustc"]:
        for wav in (mustc / "en-de" / "data" / split / "wav").iterdir():
            inodes = {(mustc / p / "data" / split / "wav" / wav.name).stat().st_ino for p in PAIRS}
            assert len(inodes) == 1
    for split in ("dev", "tst-COMMON"):  # every direction holds the same segments, translated
        sents = expected(plan["mustc", "en"], split)
        utts = {p: list(read_mustc(mustc, p, split)) for p in PAIRS}
        assert {len(u) for u in utts.values()} == {len(sents)} == {16}
        for i, s in enumerate(sents):
            assert len({(Path(u[i].audio_path).name, u[i].offset, u[i].duration) for u in utts.values()}) == 1
            assert {u[i].src_text for u in utts.values()} == {s.text["en"]}
            assert {p.split("-")[1]: u[i].tgt_text for p, u in utts.items()} == {t: s.text[t] for t in TGTS}


def test_splits_disjoint(tiny):
    _, _, plan = tiny
    heldout, train = set(), set()
    for group in plan.values():
        ids = {split: {s.id for s in expected(group, split)} for split in group.splits}
        dev, test = ids[LAYOUT_SPLITS[group.layout][1]], ids[LAYOUT_SPLITS[group.layout][2]]
        assert not dev & test
        heldout |= dev | test
        train |= ids["train"]
    assert len(train) > 800 and not train & heldout


def test_voices(tiny):
    root, manifest, _ = tiny
    variants: dict[str, set] = {lang: set() for lang in LANGS}
    for layout in LAYOUTS:
        for src, tgts in layout_directions(layout):
            for split in LAYOUT_SPLITS[layout]:
                for u in READERS[layout](root / layout, src, tgts[0], split):
                    lang, variant, rate, pitch = SPEAKER.match(u.speaker).groups()
                    assert RATE_RANGE[0] <= int(rate) <= RATE_RANGE[1]
                    assert PITCH_RANGE[0] <= int(pitch) <= PITCH_RANGE[1]
                    variants[lang].add(variant)
    assert all(len(v) >= 6 for v in variants.values()), variants
    assert {lang: sorted(v) for lang, v in variants.items()} == manifest["voices"]
    assert manifest["layouts"]["mustc"]["speakers"]["en"] >= 6


def test_manifest(tiny):
    root, manifest, _ = tiny
    on_disk = json.loads((root / "manifest.json").read_text())
    assert on_disk == {k: v for k, v in manifest.items() if k not in ("wall_time_s", "workers")}
    assert manifest["utterances"] == 80 * (1 + 9 + 9)
    assert manifest["lexicon"] == "full"
    assert len(manifest["layouts"]["covost2"]["directions"]) == 16
    assert len(manifest["layouts"]["europarl_st"]["directions"]) == 72
    assert 0.5 * 80 < manifest["layouts"]["mustc"]["seconds"] < 6 * 80
    assert manifest["wall_time_s"] < 60


def test_determinism_and_noise(tmp_path):
    small = Size(6, 3, 3)
    a, b, noisy = tmp_path / "a", tmp_path / "b", tmp_path / "noisy"
    synthesize_corpus(a, small, seed=3, workers=1, progress=False)
    synthesize_corpus(b, small, seed=3, workers=2, progress=False)
    assert hashes(a) == hashes(b) and len(hashes(a)) >= 8 * 3 * 4
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    synthesize_corpus(noisy, small, seed=3, workers=1, noise_snr_db=10.0, progress=False)
    snrs = []
    for split in LAYOUT_SPLITS["mustc"]:
        utts = list(read_mustc(a / "mustc", "en-de", split))
        for u in utts:
            clean = load_segment(u.audio_path, u.offset, u.duration)
            dirty = load_segment(u.audio_path.replace(str(a), str(noisy)), u.offset, u.duration)
            snrs.append(10 * np.log10(np.mean(clean**2) / np.mean((dirty - clean) ** 2)))
        talk = sf.read(utts[0].audio_path.replace(str(a), str(noisy)), dtype="int16")[0]
        assert not talk[: round(utts[0].offset * 16000)].any()
    assert len(snrs) == 12 and np.all(np.abs(np.array(snrs) - 10.0) < 0.5), snrs


def test_voice_variants_reproducible():
    from mlst_jax.data.synthetic.tts import synthesize

    text = "Every morning the clever teacher closes my white doors."
    first = [synthesize(text, "en", v, 170, 50)[0] for v in VOICE_VARIANTS]
    time.sleep(1.1)
    assert all(np.array_equal(a, synthesize(text, "en", v, 170, 50)[0]) for a, v in zip(first, VOICE_VARIANTS))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus size"):
        synthesize_corpus(tmp_path, "huge")
    with pytest.raises(ValueError, match="unknown layout"):
        synthesize_corpus(tmp_path, "tiny", layouts=("librispeech",))
    with pytest.raises(ValueError, match="unknown lexicon subset 'small'; choose from full, demo"):
        synthesize_corpus(tmp_path, "tiny", lexicon="small")
    assert not any(tmp_path.iterdir())
    (tmp_path / "mustc").mkdir()
    (tmp_path / "mustc" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        synthesize_corpus(tmp_path, (1, 1, 1), progress=False)


def ours(out: str) -> list[str]:
    """The lines of `mlst data prepare`'s output without tfds' own."""
    return [line for line in out.splitlines() if not line.startswith(("Downloading and preparing", "Dataset mustc"))]


def test_cli(tiny, tmp_path, capsys):
    root, _, _ = tiny
    out = tmp_path / "synth"
    assert cli.main(["data", "synth", "--out", str(out), "--size", "tiny", "--layouts", "mustc",
                          "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "mustc: 8 directions, 80 recorded utterances" in text and "train 48, dev 16, tst-COMMON 16" in text
    assert hashes(out / "mustc") == hashes(root / "mustc")

    assert cli.main(["data", "prepare", "--dataset", "synthetic", "--manual-dir", str(out),
                          "--data-dir", str(tmp_path / "tfds")]) == 0
    # every direction, the configs training on `data.dataset=synthetic` reads
    assert ours(capsys.readouterr().out) == [
        f"mustc/{pair} examples: train 48, dev 16, tst-COMMON 16" for pair in sorted(PAIRS)] + ["no utterances skipped"]
    assert cli.main(["data", "prepare", "--dataset", "synthetic", "--manual-dir", str(out),
                     "--data-dir", str(tmp_path / "tfds"), "--config", "en-de"]) == 0
    assert ours(capsys.readouterr().out) == [
        "mustc/en-de examples: train 48, dev 16, tst-COMMON 16 (up to date)",
        "nothing rebuilt: the prepared data is up to date"]

    prefix = tmp_path / "vocab" / "spm"
    assert cli.main(["data", "vocab", "--manual-dir", str(out), "--size", "300", "--out", str(prefix)]) == 0
    from mlst_jax.data.vocab import Vocab

    vocab = Vocab.from_spm(f"{prefix}.model")
    assert f"vocabulary: {len(vocab)} pieces" in capsys.readouterr().out
    assert sorted(vocab.languages) == sorted(TGTS)

    demo = tmp_path / "synth_demo_lexicon"
    assert cli.main(["data", "synth", "--out", str(demo), "--size", "tiny", "--lexicon", "demo", "--quiet"]) == 0
    assert json.loads((demo / "manifest.json").read_text())["lexicon"] == "demo"
    (group,) = corpus._plan(SIZES["tiny"], 0, ("mustc",), "demo")
    for split in LAYOUT_SPLITS["mustc"]:
        got = [(u.src_text, u.tgt_text) for u in read_mustc(demo / "mustc", "en-ru", split)]
        assert got == [(s.text["en"], s.text["ru"]) for s in expected(group, split)]

    assert cli.main(["data", "synth", "--out", str(out), "--layouts", "mustc,librispeech"]) == 2
    assert "unknown layout" in capsys.readouterr().err
    assert cli.main(["data", "prepare", "--dataset", "synthetic", "--manual-dir", str(tmp_path / "vocab"),
                          "--data-dir", str(tmp_path / "tfds")]) == 2
    assert "no mustc/ folder" in capsys.readouterr().err
    assert cli.main(["data", "vocab", "--manual-dir", str(tmp_path), "--out", str(prefix)]) == 2
    assert "no MuST-C direction folders" in capsys.readouterr().err


def test_fewer_languages_keep_the_full_corpus_sentences_and_short_sentences(tmp_path):
    """`langs` writes only those languages' directions with the sentences the full corpus has for them;
    `max_words` keeps sentences of at most that many English words; both are recorded in the manifest."""
    full = {(g.layout, g.src): g for g in corpus._plan(SIZES["tiny"], 0, ["europarl_st"], "full")}
    some = {(g.layout, g.src): g for g in corpus._plan(SIZES["tiny"], 0, ["europarl_st"], "full", ("en", "de", "fr"))}
    assert set(some) == {("europarl_st", l) for l in ("en", "de", "fr")}
    for key, g in some.items():
        assert g.tgts == tuple(t for t in ("en", "de", "fr") if t != key[1])
        for split in g.splits:
            assert [s.id for s in expected(g, split)] == [s.id for s in expected(full[key], split)]

    m = synthesize_corpus(tmp_path, (4, 2, 2), layouts=("europarl_st",), langs=("fr", "en"), max_words=5,
                          workers=1, progress=False)
    assert m["langs"] == ["en", "fr"] and m["max_words"] == 5
    assert sorted(m["layouts"]["europarl_st"]["directions"]) == ["en-fr", "fr-en"]
    for src, tgt in (("en", "fr"), ("fr", "en")):
        utts = list(read_europarl_st(tmp_path / "europarl_st", src, tgt, "train"))
        assert len(utts) == 4
        assert all(len((u.src_text if src == "en" else u.tgt_text).split()) <= 5 for u in utts)
    with pytest.raises(ValueError, match="need English"):
        synthesize_corpus(tmp_path / "x", (2, 1, 1), langs=("de", "fr"), progress=False)
