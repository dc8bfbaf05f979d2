"""Writers and readers of the MuST-C, CoVoST 2 and Europarl-ST layouts, multi-way alignment, bad inputs."""
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlst_jax.data.layouts import SkipReport, read_covost2, read_europarl_st, read_mustc
from mlst_jax.data.segments import AudioDecoderUnavailable, load_segment
from mlst_jax.data.writers import Talk, mp3_supported, write_covost2, write_europarl_st, write_mustc

SR = 16000
PAIRS = ["en-de", "en-es", "en-fr"]


def wave(n, seed):
    """Noise plus a sine, on the 16-bit grid so a wav round trip is exact."""
    rng = np.random.default_rng(seed)
    x = 0.2 * np.sin(np.arange(n) * 2 * np.pi * (200 + 50 * seed) / SR) + 0.05 * rng.standard_normal(n)
    return (np.round(x * 32768) / 32768).astype(np.float32)


def mustc_talks(missing_fr=False):
    fr = {} if missing_fr else {"fr": "deuxième"}
    return [
        Talk("ted_1", "spk.1", [
            (wave(8000, 1), "hello world", {"de": "hallo welt", "es": "hola mundo", "fr": "bonjour le monde"}),
            (wave(6000, 2), "second one", {"de": "zweite", "es": "segunda", **fr}),
        ]),
        Talk("ted_2", "spk.2", [(wave(7000, 3), "third, please", {"de": "dritte", "es": "tercera", "fr": "troisième"})]),
    ]


@pytest.fixture
def mustc(tmp_path):
    root = tmp_path / "mustc"
    write_mustc(root, PAIRS, "tst-COMMON", mustc_talks(missing_fr=True))
    return root


def txt(root, pair, split, ext):
    return root / pair / "data" / split / "txt" / f"{split}.{ext}"


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


# --- round trips ---------------------------------------------------------------------------------


def test_mustc_round_trip(mustc):
    talks = mustc_talks(missing_fr=True)
    for pair in PAIRS:
        tgt = pair.split("-")[1]
        utts = list(read_mustc(mustc, pair, "tst-COMMON"))
        expected = [
            (f"{t.talk_id}_{i}", t.speaker, w, s, d[tgt])
            for t in talks for i, (w, s, d) in enumerate(t.segments) if tgt in d
        ]
        assert [u.id for u in utts] == [e[0] for e in expected]
        for u, (uid, spk, w, s, d) in zip(utts, expected):
            assert (u.speaker, u.src_text, u.tgt_text, u.src_lang, u.tgt_lang) == (spk, s, d, "en", tgt)
            assert u.duration == pytest.approx(len(w) / SR, abs=1e-6)
            assert u.talk == uid.rsplit("_", 1)[0]
            np.testing.assert_array_equal(load_segment(u.audio_path, u.offset, u.duration), w)
        assert utts[0].offset == 0.25 and utts[1].offset == (0.25 + 0.5 + 0.25 if tgt != "fr" else 0.25)
    de_wav = mustc / "en-de/data/tst-COMMON/wav/ted_1.wav"
    for pair in PAIRS[1:]:
        assert os.path.samefile(de_wav, mustc / pair / "data/tst-COMMON/wav/ted_1.wav")
    info = sf.info(str(de_wav))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    line = txt(mustc, "en-de", "tst-COMMON", "yaml").read_text().splitlines()[0]
    assert re.fullmatch(
        r"- \{duration: 0\.500000, offset: 0\.250000, rW: 2, uW: 0, speaker_id: spk\.1, wav: ted_1\.wav\}", line
    )


def test_mustc_espeak_utterances(tmp_path):
    from mlst_jax.data.synthetic.tts import synthesize_16k

    a, _ = synthesize_16k("Good morning.", "en")
    b, _ = synthesize_16k("Thank you very much.", "en", rate=190)
    write_mustc(tmp_path, "en-de", "dev", [Talk("ted_9", "spk.9", [(a, "Good morning.", "Guten Morgen."),
                                                                   (b, "Thank you very much.", "Vielen Dank.")])])
    utts = list(read_mustc(tmp_path, "en-de", "dev"))
    assert [u.tgt_text for u in utts] == ["Guten Morgen.", "Vielen Dank."]
    for u, w in zip(utts, (a, b)):
        q = np.clip(np.round(w * 32768), -32768, 32767) / 32768
        np.testing.assert_array_equal(load_segment(u.audio_path, u.offset, u.duration), q.astype(np.float32))


def test_mustc_block_style_yaml(mustc):
    path = txt(mustc, "en-de", "tst-COMMON", "yaml")
    path.write_text(path.read_text().replace("- {", "- ").replace(", ", "\n  ").replace("}", ""))
    assert [u.id for u in read_mustc(mustc, "en-de", "tst-COMMON")] == ["ted_1_0", "ted_1_1", "ted_2_0"]


def covost_rows():
    return [
        ("common_voice_en_1", wave(5000, 4), "A first clip.", {"de": "Ein erster Clip.", "tr": "İlk klip."}, "c1", "train"),
        ("common_voice_en_2", wave(4000, 5), "Second\tclip \\ here.", {"de": "Zweiter Clip."}, "c2", "train_covost"),
        ("common_voice_en_3", wave(6000, 6), "Dev clip.", {"de": "Dev-Clip.", "tr": "Dev klip."}, "c1", "dev"),
        ("common_voice_en_4", wave(4500, 7), "Test clip.", {"de": "Test-Clip.", "tr": "Test klip."}, "c3", "test"),
    ]


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_covost2_round_trip(tmp_path, fmt):
    if fmt == "mp3" and not mp3_supported():
        pytest.skip("libsndfile cannot write MP3 here")
    write_covost2(tmp_path, "en", ["de", "tr"], covost_rows(), audio_format=fmt)
    assert (tmp_path / f"en/clips/common_voice_en_1.{fmt}").is_file()
    header = (tmp_path / "covost_v2.en_de.tsv").read_text().splitlines()[0]
    assert header == "path\tsentence\ttranslation\tclient_id\tsplit"
    train = list(read_covost2(tmp_path, "en", "de", "train"))
    assert [u.id for u in train] == ["common_voice_en_1", "common_voice_en_2"]
    assert train[1].src_text == "Second\tclip \\ here."
    assert [u.tgt_text for u in read_covost2(tmp_path, "en", "tr", "train")] == ["İlk klip."]
    (test,) = read_covost2(tmp_path, "en", "de", "test")
    assert (test.speaker, test.offset, test.tgt_text) == ("c3", 0.0, "Test-Clip.")
    rows = {r[0]: r for r in covost_rows()}
    for u in train + [test]:
        w = rows[u.id][1]
        audio = load_segment(u.audio_path, u.offset, u.duration)
        if fmt == "wav":
            assert u.duration == len(w) / SR
            np.testing.assert_array_equal(audio, w)
        else:
            assert abs(len(audio) - len(w)) <= 1152
            n = min(len(audio), len(w))
            assert np.corrcoef(audio[:n], w[:n])[0, 1] > 0.95


def test_covost2_split_files_and_validated_join(tmp_path):
    write_covost2(tmp_path, "en", "de", covost_rows(), audio_format="wav", split_files=True)
    split_tsv = tmp_path / "en_de/covost_v2.en_de.dev.tsv"
    assert split_tsv.read_text().splitlines()[0] == "path\tsentence\ttranslation\tclient_id"
    split_tsv.write_text(split_tsv.read_text().replace("Dev-Clip.", "From the split file."))
    assert [u.tgt_text for u in read_covost2(tmp_path, "en", "de", "dev")] == ["From the split file."]
    assert len(list(read_covost2(tmp_path, "en", "de", "train"))) == 2
    # the release TSV without sentence/client_id is joined with Common Voice's validated.tsv
    (tmp_path / "en_de").rename(tmp_path / "unused")
    (tmp_path / "covost_v2.en_de.tsv").write_text(
        "path\ttranslation\tsplit\ncommon_voice_en_1.wav\tEin erster Clip.\ttrain\ncommon_voice_en_3.wav\tDev-Clip.\tdev\n"
    )
    (dev,) = read_covost2(tmp_path, "en", "de", "dev")
    assert (dev.src_text, dev.tgt_text, dev.speaker) == ("Dev clip.", "Dev-Clip.", "c1")


def europarl_audios():
    return [
        ("en.20080924.3.3-001", [
            (wave(5000, 8), "Madam President.", {"de": "Frau Präsidentin!", "fr": "Madame la Présidente."}),
            (wave(3000, 9), "Thank you.", {"de": "Danke."}),
        ], "100"),
        ("en.20080924.4.3-002", [
            (wave(4000, 10), "Mr President.", {"de": "Herr Präsident!", "fr": "Monsieur le Président."}),
        ], "200"),
    ]


def test_europarl_st_round_trip(tmp_path):
    write_europarl_st(tmp_path, "en", ["de", "fr"], "test", europarl_audios())
    de = list(read_europarl_st(tmp_path, "en", "de", "test"))
    fr = list(read_europarl_st(tmp_path, "en", "fr", "test"))
    assert [u.id for u in de] == ["en.20080924.3.3-001_0", "en.20080924.3.3-001_1", "en.20080924.4.3-002_0"]
    assert [u.tgt_text for u in fr] == ["Madame la Présidente.", "Monsieur le Président."]
    assert [u.speaker for u in de] == ["100", "100", "200"]
    waves = [s[0] for a in europarl_audios() for s in a[1]]
    for u, w in zip(de, waves):
        assert u.duration == pytest.approx(len(w) / SR, abs=1e-6)
        np.testing.assert_array_equal(load_segment(u.audio_path, u.offset, u.duration), w)
    base = tmp_path / "en/de/test"
    assert (base / "segments.lst").read_text().splitlines()[0] == "en.20080924.3.3-001 0.250000 0.562500"
    assert (base / "speeches.lst").read_text().split() == ["en.20080924.3.3-001", "en.20080924.4.3-002"]


def test_europarl_st_m4a(tmp_path):
    write_europarl_st(tmp_path, "en", "de", "dev", europarl_audios()[:1])
    audios = tmp_path / "en/audios"
    wav = audios / "en.20080924.3.3-001.wav"
    m4a = wav.with_suffix(".m4a")
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(64))
    assert len(list(read_europarl_st(tmp_path, "en", "de", "dev"))) == 2  # the .wav beside it wins
    wav.rename(audios / "keep.wav")
    with pytest.raises(AudioDecoderUnavailable, match=r"ffmpeg -i .*\.m4a -ar 16000 -ac 1 .*\.wav"):
        list(read_europarl_st(tmp_path, "en", "de", "dev"))
    (audios / "wav").mkdir()
    (audios / "keep.wav").rename(audios / "wav" / wav.name)  # fairseq's converted location
    assert len(list(read_europarl_st(tmp_path, "en", "de", "dev"))) == 2


def test_writers_are_deterministic(tmp_path):
    for run in ("a", "b"):
        write_mustc(tmp_path / run / "mustc", PAIRS, "dev", mustc_talks())
        write_covost2(tmp_path / run / "covost", "en", ["de", "tr"], covost_rows(), split_files=True)
        write_covost2(tmp_path / run / "covost_wav", "en", "de", covost_rows(), audio_format="wav")
        write_europarl_st(tmp_path / run / "ep", "en", ["de", "fr"], "train", europarl_audios())
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert len(a) > 30 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    write_mustc(tmp_path / "a" / "mustc", PAIRS, "dev", mustc_talks())  # rewriting in place is stable too
    assert tree_bytes(tmp_path / "a") == b


def test_writer_rejects_line_breaks(tmp_path):
    with pytest.raises(ValueError, match="line break"):
        write_mustc(tmp_path, "en-de", "dev", [Talk("ted_1", "spk.1", [(wave(800, 1), "two\nlines", "x")])])


# --- bad inputs ----------------------------------------------------------------------------------


def read_with_report(fn, *args, **kwargs):
    report = SkipReport()
    return list(fn(*args, report=report, **kwargs)), report


def test_truncated_wav_is_skipped(mustc):
    wav = mustc / "en-de/data/tst-COMMON/wav/ted_1.wav"
    data = wav.read_bytes()
    os.unlink(wav)  # break the hard link so the other directions keep their copy
    wav.write_bytes(data[: len(data) // 2])
    utts, report = read_with_report(read_mustc, mustc, "en-de", "tst-COMMON")
    assert [u.id for u in utts] == ["ted_2_0"]
    assert report.counts == {"unreadable_audio": 2}
    assert "truncated" in report.examples["unreadable_audio"][0] and str(wav) in report.examples["unreadable_audio"][0]
    with pytest.raises(ValueError, match=r"tst-COMMON\.yaml:1 .*truncated"):
        list(read_mustc(mustc, "en-de", "tst-COMMON", on_bad_utterance="raise"))
    assert len(list(read_mustc(mustc, "en-es", "tst-COMMON"))) == 3


def test_corrupt_and_missing_audio(mustc, caplog):
    wav = mustc / "en-de/data/tst-COMMON/wav/ted_2.wav"
    os.unlink(wav)
    wav.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 4)
    os.unlink(mustc / "en-de/data/tst-COMMON/wav/ted_1.wav")
    with caplog.at_level(logging.WARNING):
        utts = list(read_mustc(mustc, "en-de", "tst-COMMON"))  # no report given: the reader logs one
    assert utts == []
    assert "missing_audio: 2" in caplog.text and "unreadable_audio: 1" in caplog.text
    with pytest.raises(ValueError, match="ted_2.wav"):
        load_segment(wav, 0.0, 0.1)


def test_resampled_and_downmixed(mustc, caplog):
    wav = mustc / "en-de/data/tst-COMMON/wav/ted_1.wav"
    audio, _ = sf.read(str(wav), dtype="float32")
    os.unlink(wav)
    sf.write(str(wav), np.stack([audio, audio], axis=1), SR, subtype="FLOAT")
    wav2 = mustc / "en-de/data/tst-COMMON/wav/ted_2.wav"
    import librosa

    audio2, _ = sf.read(str(wav2), dtype="float32")
    os.unlink(wav2)
    sf.write(str(wav2), librosa.resample(audio2, orig_sr=SR, target_sr=22050), 22050, subtype="FLOAT")
    utts = {u.id: u for u in read_mustc(mustc, "en-de", "tst-COMMON")}
    with caplog.at_level(logging.INFO, logger="mlst_jax.audio.io"):
        stereo = load_segment(utts["ted_1_0"].audio_path, utts["ted_1_0"].offset, utts["ted_1_0"].duration)
        resampled = load_segment(utts["ted_2_0"].audio_path, utts["ted_2_0"].offset, utts["ted_2_0"].duration)
    np.testing.assert_array_equal(stereo, wave(8000, 1))
    assert f"{wav}: down-mixing 2 channels to mono" in caplog.text
    assert f"{wav2}: resampling 22050 Hz -> 16000 Hz" in caplog.text
    assert abs(len(resampled) - 7000) <= 1
    assert np.corrcoef(resampled[100:6900], wave(7000, 3)[100:6900])[0, 1] > 0.95


def test_segment_past_end(mustc):
    path = txt(mustc, "en-de", "tst-COMMON", "yaml")
    path.write_text(path.read_text().replace("duration: 0.437500", "duration: 3.000000"))
    utts, report = read_with_report(read_mustc, mustc, "en-de", "tst-COMMON")
    assert len(utts) == 2 and report.counts == {"past_end": 1}
    assert report.examples["past_end"][0].startswith(f"{path}:3 (ted_2_0): segment ends at 3.250s, past the end")
    with pytest.raises(ValueError, match="extends past the end"):
        load_segment(utts[0].audio_path, 0.25, 3.0)


def test_line_counts_differ(mustc):
    de = txt(mustc, "en-de", "tst-COMMON", "de")
    de.write_text("hallo welt\n")
    yaml = txt(mustc, "en-de", "tst-COMMON", "yaml")
    with pytest.raises(ValueError, match=re.escape(f"{yaml} has 3 segments but {de} has 1 lines")):
        list(read_mustc(mustc, "en-de", "tst-COMMON"))


def test_non_utf8_text(mustc):
    de = txt(mustc, "en-de", "tst-COMMON", "de")
    de.write_bytes(b"hallo welt\ndritte \xff\xfe\n")
    with pytest.raises(ValueError, match=re.escape(f"{de}:2: not valid UTF-8")):
        list(read_mustc(mustc, "en-de", "tst-COMMON"))


def test_empty_text_is_skipped(mustc):
    en = txt(mustc, "en-de", "tst-COMMON", "en")
    en.write_text("hello world\nsecond one\n   \n")
    utts, report = read_with_report(read_mustc, mustc, "en-de", "tst-COMMON")
    assert [u.id for u in utts] == ["ted_1_0", "ted_1_1"] and report.counts == {"empty_text": 1}
    assert report.examples["empty_text"] == [f"{txt(mustc, 'en-de', 'tst-COMMON', 'yaml')}:3 (ted_2_0): empty source text"]
    with pytest.raises(ValueError, match="empty source text"):
        list(read_mustc(mustc, "en-de", "tst-COMMON", on_bad_utterance="raise"))


@pytest.mark.parametrize("line, message", [
    ("- {duration: 0.5, offset", "malformed segment entry"),
    ("- {duration: 0.5, offset: abc, wav: ted_2.wav}", "offset is not a number: 'abc'"),
    ("- {duration: 0.5, offset: 0.25, speaker_id: spk.2}", "segment lacks 'wav'"),
])
def test_malformed_yaml_line(mustc, line, message):
    path = txt(mustc, "en-de", "tst-COMMON", "yaml")
    path.write_text(path.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: {message}")):
        list(read_mustc(mustc, "en-de", "tst-COMMON"))


def test_malformed_block_yaml(mustc):
    path = txt(mustc, "en-de", "tst-COMMON", "yaml")
    path.write_text("- duration: 0.5\n  offset: 0.25\n  wav: ted_1.wav\n- duration: [0.4\n  offset: 1\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:5: malformed YAML")):
        list(read_mustc(mustc, "en-de", "tst-COMMON"))


def test_covost2_bad_rows(tmp_path):
    write_covost2(tmp_path, "en", "de", covost_rows(), audio_format="wav")
    tsv = tmp_path / "covost_v2.en_de.tsv"
    lines = tsv.read_text().splitlines()
    os.unlink(tmp_path / "en/clips/common_voice_en_2.wav")
    utts, report = read_with_report(read_covost2, tmp_path, "en", "de", "train")
    assert [u.id for u in utts] == ["common_voice_en_1"] and report.counts == {"missing_audio": 1}
    assert report.examples["missing_audio"][0].startswith(f"{tsv}:3: missing audio file")
    tsv.write_text("\n".join(lines[:2] + ["common_voice_en_2.wav\tonly two"] + lines[3:]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{tsv}:3: expected 5 tab-separated fields, got 2")):
        list(read_covost2(tmp_path, "en", "de", "train"))
    tsv.write_text("\n".join([lines[0]] + [ln.replace("Dev-Clip.", "") for ln in lines[1:]]) + "\n")
    utts, report = read_with_report(read_covost2, tmp_path, "en", "de", "dev")
    assert utts == [] and report.counts == {"empty_text": 1}
    # release TSV joined with validated.tsv: a clip missing from validated.tsv is counted
    tsv.write_text("path\ttranslation\tsplit\ncommon_voice_en_9.wav\tX\tdev\ncommon_voice_en_3.wav\tY\tdev\n")
    utts, report = read_with_report(read_covost2, tmp_path, "en", "de", "dev")
    assert [u.tgt_text for u in utts] == ["Y"] and report.counts == {"missing_transcript": 1}
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path} is not a CoVoST 2 release for en->fr: no "
                                                   f"covost_v2.en_fr.tsv or covost_v2.en_fr.dev.tsv in")):
        list(read_covost2(tmp_path, "en", "fr", "dev"))


def test_europarl_st_bad_inputs(tmp_path):
    write_europarl_st(tmp_path, "en", "de", "train", europarl_audios())
    base = tmp_path / "en/de/train"
    lst = base / "segments.lst"
    lines = lst.read_text().splitlines()
    lst.write_text("\n".join([lines[0], "en.20080924.3.3-001 0.8", lines[2]]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{lst}:2: expected '<audio_id> <start> <end>'")):
        list(read_europarl_st(tmp_path, "en", "de", "train"))
    lst.write_text("\n".join([lines[0], "en.20080924.3.3-001 0.8125 9.0", lines[2]]) + "\n")
    utts, report = read_with_report(read_europarl_st, tmp_path, "en", "de", "train")
    assert len(utts) == 2 and report.counts == {"past_end": 1}
    (base / "segments.de").write_bytes(b"a\nb\n")
    with pytest.raises(ValueError, match=re.escape(f"{lst} has 3 segments but {base / 'segments.de'} has 2 lines")):
        list(read_europarl_st(tmp_path, "en", "de", "train"))
    (base / "segments.de").write_bytes(b"a\nb\n\x80c\n")
    with pytest.raises(ValueError, match=re.escape(f"{base / 'segments.de'}:3: not valid UTF-8")):
        list(read_europarl_st(tmp_path, "en", "de", "train"))


def test_skip_report():
    a, b = SkipReport(max_examples=2), SkipReport(max_examples=2)
    for i in range(3):
        a.add("past_end", f"a{i}")
    b.add("past_end", "b0")
    b.add("empty_text", "b1")
    a.merge(b)
    assert a.total == 5 and a.counts == {"past_end": 4, "empty_text": 1}
    assert a.examples == {"past_end": ["a0", "a1"], "empty_text": ["b1"]}
    assert a.summary().splitlines()[0] == "skipped 5 utterance(s):"
    assert SkipReport().summary() == "no utterances skipped"
    with pytest.raises(ValueError, match="on_bad_utterance"):
        list(read_mustc("/nonexistent", "en-de", "dev", on_bad_utterance="ignore"))
