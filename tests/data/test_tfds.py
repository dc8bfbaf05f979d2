"""TFDS builders (ArrayRecord, no TensorFlow) over tiny corpora written in the real layouts."""
import logging
import os
import sys
import tempfile

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from mlst_jax.audio import fbank
from mlst_jax.audio.io import AudioConversions
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
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty'}: missing or empty; it should hold the mustc release"):
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


def array_records(data_dir):
    """`{file name: mtime_ns}` of the ArrayRecord files of mustc/en-de."""
    return {p.name: p.stat().st_mtime_ns for p in (data_dir / "mustc/en-de/1.1.0").glob("*.array_record-*")}


def touch_later(path, seconds=5):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_prepared_data_is_rebuilt_when_its_source_changed(tmp_path, caplog):
    manual, data = tmp_path / "manual", tmp_path / "data"
    write_mustc(manual, ["en-de"], "dev", TALKS)
    assert prepare("mustc", manual, data, "en-de") == {"dev": 3}
    built = array_records(data)
    assert caplog.records == []

    assert prepare("mustc", manual, data, "en-de") == {"dev": 3}  # unchanged: reused as it is
    assert array_records(data) == built and caplog.records == []

    text = manual / "en-de/data/dev/txt/dev.de"
    text.write_text(text.read_text().replace("hallo welt", "Hallo Welt"))  # same size: the mtime tells
    touch_later(text)
    assert prepare("mustc", manual, data, "en-de") == {"dev": 3}
    assert [r.getMessage() for r in caplog.records] == [
        f"mustc/en-de: rebuilding {data}/mustc/en-de/1.1.0: its source changed since it was built "
        f"(dev: 1 of 5 files changed, e.g. {text})"
    ]
    assert array_records(data).keys() == built.keys() and array_records(data) != built
    exs = by_id(MustC(config="en-de", data_dir=data).as_data_source("dev"))
    assert [exs[i]["tgt_text"] for i in ("ted_1_0", "ted_1_1")] == [b"Hallo Welt", b"zweite"]

    caplog.clear()
    (data / "mustc/en-de/1.1.0" / tfds_builders.SOURCE_FILE).unlink()  # data that does not say what it was made from
    prepare("mustc", manual, data, "en-de")
    assert [r.getMessage() for r in caplog.records] == [
        f"mustc/en-de: rebuilding {data}/mustc/en-de/1.1.0: it has no record of its source files (mlst_source.json)"
    ]


def test_preparation_reports_skipped_utterances_last_without_tfds_noise(tmp_path, capsys):
    """The skip summary follows tfds' own output (progress, "prepared to ..."); tfds' warning about the config
    folder not prepared yet is not shown."""
    talks = [TALKS[0], Talk("ted_2", "spk.2", [(wave(7000, 3), "third", {"de": ""})])]
    write_mustc(tmp_path / "manual", ["en-de"], "dev", talks)
    handler = logging.StreamHandler(sys.stdout)  # the log in one stream with tfds' prints
    logging.getLogger().addHandler(handler)
    try:
        assert prepare("mustc", tmp_path / "manual", tmp_path / "data", "en-de") == {"dev": 2}
    finally:
        logging.getLogger().removeHandler(handler)
    out = capsys.readouterr().out
    assert "Variant folder" not in out
    yaml = tmp_path / "manual/en-de/data/dev/txt/dev.yaml"
    assert out.split(f"Dataset mustc downloaded and prepared to {tmp_path}/data/mustc/en-de/1.1.0. ")[1] == (
        "Subsequent calls will reuse this data.\n"
        "mustc/en-de dev: skipped 1 utterance(s):\n"
        "  empty_text: 1\n"
        f"    e.g. {yaml}:3 (ted_2_0): empty target text\n"
    )


def test_down_mixing_and_resampling_are_reported_once(tmp_path, caplog):
    manual = tmp_path / "manual"
    write_mustc(manual, ["en-de"], "dev", TALKS)
    talk = manual / "en-de/data/dev/wav/ted_2.wav"
    n = round(sf.info(talk).frames * 44100 / SR)
    sf.write(talk, np.stack([wave(n, 3), wave(n, 4)], axis=1), 44100, subtype="PCM_16")
    assert prepare("mustc", manual, tmp_path / "data", "en-de") == {"dev": 3}
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "mustc/en-de: 1 of 2 audio files was stereo (down-mixed to mono), 1 was at 44100 Hz "
                    "(resampled to 16 kHz)")
    ]
    exs = by_id(MustC(config="en-de", data_dir=tmp_path / "data").as_data_source("dev"))
    assert abs(int(exs["ted_2_0"]["n_frames"]) - 7000) <= 1  # 16 kHz mono


def test_audio_conversion_summary():
    conversions = AudioConversions()
    for i, (channels, sr) in enumerate([(2, 44100), (2, 16000), (6, 8000), (1, 16000)]):
        conversions.add(f"f{i}.wav", channels, sr, 16000)
    conversions.add("f0.wav", 2, 44100, 16000)  # a file read again (another segment) counts once
    assert conversions.summary() == (
        "2 of 4 audio files were stereo (down-mixed to mono), 1 was 6-channel (down-mixed to mono), "
        "1 was at 8000 Hz (resampled to 16 kHz), 1 was at 44100 Hz (resampled to 16 kHz)"
    )
    assert AudioConversions().summary() == ""
