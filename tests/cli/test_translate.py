"""`mlst translate` and `Translator` on what a new user meets: exports that serve some languages only, audio that
cannot be speech, checkpoints that are not models, and the help. Tiny random S2T models (no torch)."""
import json
import logging
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from mlst_jax import cli
from mlst_jax.audio import fbank
from mlst_jax.data.vocab import train_vocab
from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.translator import Translator

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["das ist ein Haus", "la casa es grande", "ich sehe den Hund", "el perro es negro"] * 10
FAST = ["--beam", "1", "--max-len-b", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """`grad/de` and `grad/es`: one tiny model saved as the per-language exports of a differentiated run;
    `shared`: the same model serving every language."""
    root = tmp_path_factory.mktemp("models")
    vocab = train_vocab(TEXTS, root / "spm", 40, ["de", "es"])
    config = S2TConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
                       decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=16,
                       max_source_positions=256, max_target_positions=16, dropout=0.0)
    params = S2TTransformer(config).init(jax.random.PRNGKey(0), jnp.ones((1, 20, 80)), jnp.array([20]),
                                         jnp.ones((1, 3), jnp.int32))["params"]
    for lang in ("de", "es"):
        Translator(config, params, vocab, langs=(lang,)).save(root / "grad" / lang)
    Translator(config, params, vocab).save(root / "shared")
    return root


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def wav_file(path: Path, samples: np.ndarray) -> Path:
    sf.write(path, samples, 16000, subtype="FLOAT")
    return path


def speech(n: int = 16000) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)


# -- exports that serve some languages only -------------------------------------------------------------------


def test_export_records_and_enforces_its_languages(models):
    de_dir, es_dir = models / "grad" / "de", models / "grad" / "es"
    assert json.loads((de_dir / "mlst_model.json").read_text())["langs"] == ["de"]
    assert json.loads((models / "shared" / "mlst_model.json").read_text())["langs"] is None
    de, shared = Translator.from_pretrained(de_dir), Translator.from_pretrained(models / "shared")
    assert de.langs == ("de",) and shared.langs is None and de.path == de_dir
    es_tag = shared.lang_id("es")
    assert de.lang_id("de") == shared.lang_id("de") and es_tag != shared.lang_id("de")
    with pytest.raises(ValueError) as e:
        de.lang_id("es")
    assert str(e.value) == f"{de_dir} serves de only; translate into es with {es_dir}"
    with pytest.raises(ValueError) as e:  # the tag's id is the same language
        de.generate(np.zeros((1, 40, 80), np.float32), [40], es_tag)
    assert str(e.value) == f"{de_dir} serves de only; translate into token id {es_tag} with {es_dir}"
    with pytest.raises(ValueError) as e:
        de.translate([speech()], 16000, "es")
    assert str(e.value) == f"{de_dir} serves de only; translate into es with {es_dir}"

    alone = Translator(de.config, de.params, de.vocab, langs=("de",))  # built in memory: no folder to name
    with pytest.raises(ValueError) as e:
        alone.lang_id("es")
    assert str(e.value) == "this model serves de only, not es"
    with pytest.raises(ValueError, match=r"unknown target language 'fr'; this vocabulary has tags for \['de', 'es'\]"):
        Translator(de.config, de.params, de.vocab, langs=("fr",))
    with pytest.raises(ValueError, match="langs must name at least one language"):
        Translator(de.config, de.params, de.vocab, langs=())


def test_translate_refuses_a_language_the_export_does_not_serve(models, tmp_path, capsys):
    audio = wav_file(tmp_path / "a.wav", speech())
    de_dir, es_dir = models / "grad" / "de", models / "grad" / "es"
    rc, out, err = run_cli(capsys, "translate", "--checkpoint", de_dir, "--tgt-lang", "es", *FAST, audio)
    assert (rc, out) == (2, "")
    assert err == f"mlst translate: error: {de_dir} serves de only; translate into es with {es_dir}\n"
    for checkpoint, lang in ((es_dir, "es"), (models / "shared", "es"), (de_dir, "de")):
        rc, out, err = run_cli(capsys, "translate", "--checkpoint", checkpoint, "--tgt-lang", lang, *FAST, audio)
        assert rc == 0, err
        assert json.loads(out)["audio"] == str(audio) and json.loads(out)["tgt_lang"] == lang


# -- audio that cannot be speech ------------------------------------------------------------------------------


def test_silence_and_unnormalized_audio_are_named_in_warnings(models, tmp_path, capsys, caplog):
    loud = 80 * speech()  # a float file far outside [-1, 1]
    peak = float(np.abs(loud).max())
    files = [wav_file(tmp_path / "zero.wav", np.zeros(16000, np.float32)),
             wav_file(tmp_path / "dc.wav", np.full(16000, 0.25, np.float32)),
             wav_file(tmp_path / "loud.wav", loud), wav_file(tmp_path / "ok.wav", speech())]
    caplog.set_level(logging.WARNING, logger="mlst_jax.translator")
    rc, out, err = run_cli(capsys, "translate", "--checkpoint", models / "shared", "--tgt-lang", "de", *FAST, *files)
    assert rc == 0, err
    assert [json.loads(line)["audio"] for line in out.splitlines()] == list(map(str, files))
    assert [r.getMessage() for r in caplog.records if r.name == "mlst_jax.translator"] == [
        f"{files[0]}: silence (all 16000 samples are 0.0); translated as it is",
        f"{files[1]}: silence (all 16000 samples are 0.25); translated as it is",
        f"{files[2]}: clipping or unnormalized float input (peak {np.format_float_positional(peak, 6, trim='0')}); "
        "scaled to peak 1.0"]

    caplog.clear()
    t = Translator.from_pretrained(models / "shared")
    eight = np.array([0.0, 8.0, -2.0] * 1000, np.float32)
    kw = dict(beam_size=1, max_len_b=2)
    assert t.translate([eight], 16000, "de", **kw) == t.translate([eight / 8], 16000, "de", **kw)
    np.testing.assert_array_equal(t._audio_input(eight, 16000, "x"), t._audio_input(eight / 8, 16000, "y"))
    assert [r.getMessage() for r in caplog.records] == [
        "waveforms[0]: clipping or unnormalized float input (peak 8.0); scaled to peak 1.0", "x: clipping or "
        "unnormalized float input (peak 8.0); scaled to peak 1.0"]
    raw = Translator(t.config, t.params, t.vocab, cmvn="none")  # the model input itself is the scaled waveform's
    np.testing.assert_array_equal(raw._audio_input(eight, 16000, "x"), fbank(eight / 8, 16000))
    assert not np.array_equal(fbank(eight, 16000), fbank(eight / 8, 16000))


# -- errors that say what is wrong ------------------------------------------------------------------------------


def test_checkpoint_and_audio_errors_are_one_clear_line(models, tmp_path, capsys):
    short = wav_file(tmp_path / "short.wav", speech(100))
    ok = wav_file(tmp_path / "ok.wav", speech())
    run = tmp_path / "run"  # what `mlst train --workdir run` leaves
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": {"tgt_langs": ["de"]}, "model": {}}))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    cases = [
        (models / "shared", short, f"{short}: waveform too short: 100 samples, need at least one 25 ms frame "
                                   "(400 samples at 16 kHz)"),
        (tmp_path / "nowhere", ok, f"{tmp_path / 'nowhere'} does not exist"),
        (run, ok, f"{run / 'checkpoints'}: no checkpoints"),  # a run translates from its checkpoints
        (models / "grad", ok, f"{models / 'grad'} is not a model but holds exported models (de, es): pass the one "
                              f"that serves the target language, e.g. {models / 'grad' / 'de'}"),
    ]
    for checkpoint, audio, message in cases:
        rc, out, err = run_cli(capsys, "translate", "--checkpoint", checkpoint, "--tgt-lang", "de", *FAST, audio)
        assert (rc, out, err) == (2, "", f"mlst translate: error: {message}\n")
    rc, out, err = run_cli(capsys, "translate", "--checkpoint", junk, "--tgt-lang", "de", ok)
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"mlst translate: error: {junk}: not a supported")
    assert "; exported: a directory with mlst_model.json and params.safetensors (what `mlst average` and " \
           "Translator.save write)" in err
    rc, out, err = run_cli(capsys, "convert", "--src", tmp_path / "nowhere", "--dst", tmp_path / "hf")
    assert (rc, err) == (2, f"mlst convert: error: {tmp_path / 'nowhere'} does not exist\n")


def test_translate_errors_name_the_input(models):
    t = Translator.from_pretrained(models / "shared")
    with pytest.raises(ValueError) as e:
        t.translate([speech(), speech(100)], 16000, "de")
    assert str(e.value) == ("waveforms[1]: waveform too short: 100 samples, need at least one 25 ms frame "
                            "(400 samples at 16 kHz)")
    with pytest.raises(ValueError) as e:
        t.translate([speech(), np.full(500, np.nan, np.float32)], 16000, "de", names=["a.wav", "b.wav"])
    assert str(e.value) == "b.wav: got a waveform with 500 non-finite (NaN/inf) samples"
    with pytest.raises(ValueError, match="1 names for 2 waveforms"):
        t.translate([speech(), speech()], 16000, "de", names=["a.wav"])


# -- help and docs -------------------------------------------------------------------------------------------


def test_translate_help_shows_every_option_and_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["translate", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("--beam BEAM beam size; 1 is greedy decoding (default: 5)",
                     "--lenpen LENPEN length penalty: a finished hypothesis scores sum(log p) / length ** LENPEN; "
                     "above 1 favors longer outputs (default: 1.0)",
                     "--max-len-a MAX_LEN_A at most MAX_LEN_A x input length + MAX_LEN_B tokens, the input length "
                     "in fbank frames (S2T) or samples (XMEF) (default: 0.0)",
                     "--max-len-b MAX_LEN_B see --max-len-a (default: 200)",
                     "--batch-size BATCH_SIZE audio files decoded together (default: 8)"):
        assert fragment in text


def test_api_docs_show_the_translate_defaults():
    """The `mlst translate` line of docs/api.md names every decoding option with the parser's default."""
    line = next(l for l in (ROOT / "docs" / "api.md").read_text().splitlines() if l.startswith("mlst translate "))
    shown = dict(re.findall(r"(--[a-z-]+) ([0-9.]+)", line))
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["translate"]
    defaults = {a.option_strings[0]: a.default for a in sub._actions
                if a.option_strings and isinstance(a.default, (int, float)) and not isinstance(a.default, bool)}
    assert set(shown) == set(defaults) == {"--beam", "--lenpen", "--max-len-a", "--max-len-b", "--batch-size"}
    assert {k: type(defaults[k])(v) for k, v in shown.items()} == defaults
