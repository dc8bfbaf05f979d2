"""TFDS builders (ArrayRecord, no TensorFlow) over tiny corpora written in the real layouts."""
import os
import sys
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mlst_jax.audio import fbank
from mlst_jax.data import tfds_builders
from mlst_jax.data.tfds_builders import CoVoST2, EuroparlST, MustC, prepare, tfds_split_name
from mlst_jax.data.writers import Talk, write_covost2, write_europarl_st, write_mustc

SR = 16000


def wave(n, seed):
    rng = np.random.default_rng(seed)
    x = 0.2 * np.sin(np.arange(n) * 2 * np.pi * (150 + 40 * seed) / SR) + 0.05 * rng.standard_normal(n)
    return (np.round(x * 32768) / 32768).astype(np.float32)


def pcm(w):
    return np.round(w * 32768).astype(np.int16)


TALKS = [
    Talk("ted_1", "spk.1", [(wave(8000, 1), "hello world", {"de": "hallo welt", "es": "hola mundo"}),
                            (wave(6000, 2), "second one", {"de": "zweite"})]),
    Talk("ted_2", "spk.2", [(wave(7000, 3), "third", {"de": "dritte", "es": "tercera"})]),
]
WAVES = {"ted_1_0": TALKS[0].segments[0][0], "ted_1_1": TALKS[0].segments[1][0], "ted_2_0": TALKS[1].segments[0][0]}


@pytest.fixture(scope="module")
def mustc_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mustc")
    for split in ("tst-COMMON", "dev"):
        write_mustc(root, ["en-de", "en-es"], split, TALKS)
    return root


def by_id(ds):
    return {ex["id"].decode(): ex for ex in (ds[i] for i in range(len(ds)))}


def test_mustc_pair_audio(mustc_dir, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    counts = prepare("mustc", mustc_dir, tmp_path / "data", "en-de")
    assert counts == {"tst_COMMON": 3, "dev": 3}
    assert list(scratch.iterdir()) == []  # no temporary folder left behind
    builder = MustC(config="en-de", data_dir=tmp_path / "data")
    ds = builder.as_data_source("tst_COMMON")
    exs = by_id(ds)
    assert exs.keys() == WAVES.keys()
    ex = exs["ted_1_0"]
    assert {k: ex[k] for k in ("talk", "speaker", "src_lang", "tgt_lang", "src_text", "tgt_text")} == {
        "talk": b"ted_1", "speaker": b"spk.1", "src_lang": b"en", "tgt_lang": b"de",
        "src_text": b"hello world", "tgt_text": b"hallo welt",
    }
    for uid, w in WAVES.items():
        assert exs[uid]["audio"].dtype == np.int16
        np.testing.assert_array_equal(exs[uid]["audio"], pcm(w))
        assert exs[uid]["n_frames"] == len(w)
    assert "tensorflow" not in sys.modules


def test_mustc_multilingual(mustc_dir, tmp_path):
    assert prepare("mustc", mustc_dir, tmp_path, "multilingual") == {"tst_COMMON": 5, "dev": 5}
    ds = MustC(config="multilingual", data_dir=tmp_path).as_data_source("dev")
    got = sorted((ds[i]["tgt_lang"].decode(), ds[i]["id"].decode(), ds[i]["tgt_text"].decode()) for i in range(len(ds)))
    assert got == [
        ("de", "ted_1_0", "hallo welt"), ("de", "ted_1_1", "zweite"), ("de", "ted_2_0", "dritte"),
        ("es", "ted_1_0", "hola mundo"), ("es", "ted_2_0", "tercera"),
    ]


def test_mustc_fbank(mustc_dir, tmp_path):
    prepare("mustc", mustc_dir, tmp_path, "en-es.fbank")
    exs = by_id(MustC(config="en-es.fbank", data_dir=tmp_path).as_data_source("tst_COMMON"))
    assert exs.keys() == {"ted_1_0", "ted_2_0"}
    feats = exs["ted_2_0"]["fbank"]
    assert feats.dtype == np.float16 and feats.shape == (exs["ted_2_0"]["n_frames"], 80)
    expected = np.asarray(fbank(WAVES["ted_2_0"], SR))
    np.testing.assert_allclose(feats.astype(np.float32), expected, rtol=2e-3, atol=2e-2)


def test_covost2_builder(tmp_path):
    rows = [
        ("common_voice_en_1", wave(5000, 4), "A first clip.", "Ein erster Clip.", "c1", "train"),
        ("common_voice_en_2", wave(4000, 5), "Second clip.", "Zweiter Clip.", "c2", "train_covost"),
        ("common_voice_en_3", wave(6000, 6), "Dev clip.", "Dev-Clip.", "c1", "dev"),
    ]
    write_covost2(tmp_path / "manual", "en", "de", rows, audio_format="wav")
    assert prepare("covost2", tmp_path / "manual", tmp_path / "data", "en_de") == {"train": 2, "dev": 1}
    exs = by_id(CoVoST2(config="en_de", data_dir=tmp_path / "data").as_data_source("train"))
    assert exs["common_voice_en_2"]["speaker"] == b"c2"
    np.testing.assert_array_equal(exs["common_voice_en_2"]["audio"], pcm(rows[1][1]))


def test_europarl_st_builder_skips_bad_audio(tmp_path):
    audios = [
        ("en.1", [(wave(5000, 7), "Madam President.", "Frau Präsidentin!"), (wave(3000, 8), "Thanks.", "Danke.")]),
        ("en.2", [(wave(4000, 9), "Mr President.", "Herr Präsident!")]),
    ]
    manual = tmp_path / "manual"
    write_europarl_st(manual, "en", "de", "test", audios)
    write_europarl_st(manual, "en", "de", "train-noisy", audios[:1])
    wav2 = manual / "en/audios/en.2.wav"
    wav2.write_bytes(wav2.read_bytes()[:60])  # truncated: its utterance is skipped and counted
    with pytest.raises(ValueError, match="truncated"):
        EuroparlST(config="en-de", data_dir=tmp_path / "strict", on_bad_utterance="raise").download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual))
        )
    builder = EuroparlST(config="en-de", data_dir=tmp_path / "data")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"test": 2, "train_noisy": 2}
    assert builder.skip_reports["test"].counts == {"unreadable_audio": 1}
    exs = by_id(builder.as_data_source("test"))
    np.testing.assert_array_equal(exs["en.1_1"]["audio"], pcm(audios[0][1][1][0]))


def test_split_names_and_errors(tmp_path):
    assert [tfds_split_name(s) for s in ("train", "tst-COMMON", "tst-HE", "train-noisy")] == [
        "train", "tst_COMMON", "tst_HE", "train_noisy",
    ]
    with pytest.raises(ValueError, match="unknown dataset"):
        prepare("librispeech", tmp_path, tmp_path)
    with pytest.raises(AssertionError, match="must-c"):
        prepare("mustc", tmp_path / "empty", tmp_path / "data", "en-de")


def test_split_over_the_shuffle_buffer_spills_to_local_files(mustc_dir, tmp_path, monkeypatch):
    """A split larger than tfds' in-memory shuffle buffer (1 GB) is bucketed on disk, which tfds does through
    TensorFlow's gfile; without TensorFlow the buckets are plain files and the data set comes out the same."""
    from tensorflow_datasets.core import shuffle

    assert "tensorflow" not in sys.modules
    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 100)  # every split here spills
    spilled, in_memory = tmp_path / "spilled", tmp_path / "in_memory"
    assert prepare("mustc", mustc_dir, spilled, "en-de") == {"tst_COMMON": 3, "dev": 3}
    monkeypatch.undo()
    prepare("mustc", mustc_dir, in_memory, "en-de")
    for split in ("tst_COMMON", "dev"):
        a = by_id(MustC(config="en-de", data_dir=spilled).as_data_source(split))
        b = by_id(MustC(config="en-de", data_dir=in_memory).as_data_source(split))
        assert a.keys() == b.keys() == WAVES.keys()
        for uid in a:
            np.testing.assert_array_equal(a[uid]["audio"], b[uid]["audio"])
            assert a[uid]["tgt_text"] == b[uid]["tgt_text"]
    assert shuffle.tf is not tfds_builders._LOCAL_FILES_AS_TF  # tfds' own (lazy) module is back
