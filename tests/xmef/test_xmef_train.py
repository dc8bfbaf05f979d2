"""`mlst xmef-train` (mlst_jax/xmef/train.py) end to end on a tiny synthetic CoVoST 2 corpus with tiny random HF
Wav2Vec2Model and MBartForConditionalGeneration directories (mBART-50 id layout): LNA-Minimalist finetuning keeps
the frozen weights bitwise, changes the trained ones and lowers the loss; the saved model reloads with the same
logits; results.json scores every evaluated direction and marks the supervised cells; bad configs, data and
directories fail early with clear errors. One training run (module fixture) serves every check."""
import json
import math
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mlst_jax import cli  # noqa: E402
from mlst_jax.data.layouts import read_covost2  # noqa: E402
from mlst_jax.data.synthetic.corpus import synthesize_corpus  # noqa: E402
from mlst_jax.finetune import lna  # noqa: E402
from mlst_jax.models.mbart import MBART50_LANG_CODES  # noqa: E402
from mlst_jax.translator import Translator  # noqa: E402
from mlst_jax.xmef import corpus_data  # noqa: E402
from mlst_jax.xmef import train as xtrain  # noqa: E402

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]
LARGE = ROOT / "configs" / "xmef_covost_large.py"
MAX_SECONDS = 2.5
STEPS = 10
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=6,
               num_conv_pos_embedding_groups=4, feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)
DECODER = dict(d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=40, max_position_embeddings=64,
               scale_embedding=True)
MBART_ENCODER = dict(encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=40)
TINY_CONFIG = '''
import importlib.util
import ml_collections

_spec = importlib.util.spec_from_file_location("xmef_covost_large", {large!r})
_large = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_large)


def get_config(arg=""):
    c = _large.get_config(arg)
    c.model.xmef.encoder = ml_collections.ConfigDict({encoder!r})
    c.model.xmef.decoder = ml_collections.ConfigDict({decoder!r})
    c.model.xmef.adaptor_layers = 2
    c.data.src_langs = ("de",)
    c.data.tgt_langs = ("de", "fr")
    return c
'''


def _run_args(env, *extra, config=None, workdir=None, encoder=None, decoder=None):
    return ["xmef-train", "--config", str(config or env["config"]), "--workdir", str(workdir or env["root"] / "run"),
            "--encoder", str(encoder or env["w2v"]), "--decoder", str(decoder or env["mbart"]),
            f"--config.data.manual_dir={env['corpus']}", "--config.data.directions=de-en,en-fr",
            "--config.data.eval_directions=de-en,en-fr,en-de", "--config.data.batch_size=4",
            f"--config.data.max_seconds={MAX_SECONDS}", "--config.data.bucket_seconds=0.0",
            f"--config.train.max_updates={STEPS}", "--config.optim.warmup_updates=2", "--config.optim.lr=0.02",
            "--config.finetune.trainable=lna-minimalist", "--config.train.progress=False", "--config.eval.beam=1",
            "--config.eval.max_len_b=8", *extra]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("xmef_train")
    corpus = root / "corpus"
    synthesize_corpus(corpus, size=(6, 2, 2), layouts=("covost2",), workers=1, progress=False)
    corpus = corpus / "covost2"
    texts = [line.split("\t")[2] for pair in ("de_en", "en_de", "en_fr")
             for line in (corpus / f"covost_v2.{pair}.tsv").read_text().splitlines()[1:]]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(root / "spm"), vocab_size=120,
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2)
    sp_size = spm.SentencePieceProcessor(model_file=str(root / "spm.model")).get_piece_size()
    vocab_size = sp_size + 1 + len(MBART50_LANG_CODES) + 1
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**ENCODER)).save_pretrained(root / "w2v")
    transformers.MBartForConditionalGeneration(transformers.MBartConfig(
        vocab_size=vocab_size, **DECODER, **MBART_ENCODER)).save_pretrained(root / "mbart")
    shutil.copy(root / "spm.model", root / "mbart" / "sentencepiece.bpe.model")
    ours_encoder = {**ENCODER, "layerdrop": 0.0, "hidden_dropout": 0.0, "attention_dropout": 0.0,
                    "activation_dropout": 0.0}
    ours_decoder = {**DECODER, "vocab_size": vocab_size, "dropout": 0.0}
    (root / "tiny.py").write_text(TINY_CONFIG.format(large=str(LARGE), encoder=ours_encoder, decoder=ours_decoder))
    env = dict(root=root, corpus=corpus, w2v=root / "w2v", mbart=root / "mbart", config=root / "tiny.py",
               sp_size=sp_size)

    captured = {}
    original = xtrain.train_xmef

    def spy(*args, **kwargs):
        captured["results"], captured["translator"] = original(*args, **kwargs)
        return captured["results"], captured["translator"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(xtrain, "train_xmef", spy)
        env["rc"] = cli.main(_run_args(env))
    env.update(captured)
    env["workdir"] = root / "run"
    return env


def _pretrained(env, config):
    from mlst_jax.convert import load_pretrained
    from mlst_jax.convert.xmef import xmef_from_pretrained

    _, _, _, enc = load_pretrained(env["w2v"])
    _, _, _, dec = load_pretrained(env["mbart"])
    adaptor = {f: getattr(config, f) for f in xtrain.ADAPTOR_FIELDS}
    return xmef_from_pretrained((config.encoder, enc), (config.decoder, dec), **adaptor)[1]


def test_run_writes_model_and_results(env, capsys):
    assert env["rc"] == 0
    out = json.loads((env["workdir"] / "results.json").read_text())
    assert set(out["bleu"]) == {"de-en", "en-fr", "en-de"}
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in out["bleu"].values())
    assert all(out["test"][k]["n"] == 2 for k in out["bleu"])
    assert out["supervised"] == ["de-en", "en-fr"] and out["zero_shot"] == ["en-de"]
    assert (env["workdir"] / "config.json").is_file()
    assert (env["workdir"] / "model" / "sentencepiece.bpe.model").is_file()
    # supervised cells end in '*', the zero-shot one does not
    rows = {line.split()[0]: line.split()[1:] for line in out["matrix"].splitlines()[1:4]}
    langs = out["langs"]
    assert langs == ["en", "de", "fr"]
    assert rows["de→"][0].endswith("*")  # de→en
    assert rows["en→"][langs.index("fr") - 1].endswith("*")  # en→fr (the en→en cell is blank)
    assert re.fullmatch(r"\d+\.\d", rows["en→"][langs.index("de") - 1])  # en→de: zero-shot
    assert "de-fr" not in out["bleu"] and rows["de→"][-1] == "-"


def test_data_counts_and_length_filter(env):
    out = json.loads((env["workdir"] / "results.json").read_text())
    for key, (src, tgt) in {"de-en": ("de", "en"), "en-fr": ("en", "fr")}.items():
        utts = list(read_covost2(env["corpus"], src, tgt, "train"))
        assert out["data"]["counts"]["train"][key] == sum(u.duration <= MAX_SECONDS for u in utts)
    too_long = sum(u.duration > MAX_SECONDS for s, t in (("de", "en"), ("en", "fr"))
                   for u in read_covost2(env["corpus"], s, t, "train"))
    assert out["data"]["skipped"]["train"] == ({"too_long": too_long} if too_long else {})
    assert set(out["dev"]) <= {"de-en", "en-fr"} and out["dev"]
    assert all(math.isfinite(d["nll"]) and d["tokens"] > 0 for d in out["dev"].values())


def test_loss_is_finite_and_decreases(env):
    tr = env["results"]["train"]
    assert len(tr["loss"]) == STEPS and all(math.isfinite(x) for x in tr["loss"])
    assert tr["last_loss"] < tr["first_loss"]


def test_frozen_leaves_are_bitwise_pretrained_and_trained_ones_changed(env):
    saved = Translator.from_pretrained(env["workdir"] / "model")
    pre = _pretrained(env, saved.config)
    mask = lna.trainable_mask(saved.params, "lna-minimalist", model="xmef")
    flat_mask = jax.tree_util.tree_flatten_with_path(mask)[0]
    flat_saved, flat_pre = jax.tree.leaves(saved.params), jax.tree.leaves(pre)
    assert len(flat_mask) == len(flat_saved) == len(flat_pre)
    frozen = trained = 0
    for (path, flag), a, b in zip(flat_mask, flat_saved, flat_pre):
        a, b = np.asarray(a), np.asarray(b)
        name = jax.tree_util.keystr(path)
        if flag:
            trained += 1
            if not name.startswith("['adaptor']"):  # the adaptor is new: nothing to compare with
                assert not np.array_equal(a, b), f"trained leaf {name} did not change"
        else:
            frozen += 1
            assert a.dtype == b.dtype and np.array_equal(a, b), f"frozen leaf {name} changed"
    assert frozen > 0 and trained > 0
    assert env["results"]["trained_params"] < env["results"]["total_params"]


def test_saved_model_reloads_with_the_same_logits(env):
    mem, saved = env["translator"], Translator.from_pretrained(env["workdir"] / "model")
    assert saved.config == mem.config and saved.cmvn == mem.cmvn == "utterance"
    jax.tree.map(np.testing.assert_array_equal, saved.params, jax.tree.map(np.asarray, mem.params))
    rng = np.random.default_rng(0)
    wav = rng.standard_normal((2, 20000)).astype(np.float32)
    dec = np.array([[2, mem.lang_id("fr"), 5, 9, 11], [2, mem.lang_id("en"), 7, 4, 1]])
    ref = mem.logits(wav, [20000, 15000], dec)
    np.testing.assert_array_equal(saved.logits(wav, [20000, 15000], dec), ref)
    assert np.isfinite(ref).all()


def test_init_from_speech_encoder_decoder_dir(env, tmp_path):
    """An HF SpeechEncoderDecoderModel directory (here: the finetuned model exported) loads through --init with
    its adaptor; its config must match the experiment config's adaptor."""
    from mlst_jax.convert.xmef import save_hf_xmef
    from mlst_jax.train.cli_train import load_config
    from mlst_jax.xmef.config import model_config

    mem = env["translator"]
    save_hf_xmef(tmp_path / "sed", mem.config, jax.tree.map(np.asarray, mem.params))
    shutil.copy(env["mbart"] / "sentencepiece.bpe.model", tmp_path / "sed" / "sentencepiece.bpe.model")
    want = model_config(load_config(str(env["config"])))
    pre = xtrain.check_pretrained(want, init=tmp_path / "sed")
    config, params = xtrain.load_model(want, pre)
    assert config == mem.config
    jax.tree.map(np.testing.assert_array_equal, params, jax.tree.map(np.asarray, mem.params))
    with pytest.raises(ValueError, match=r"model.xmef.adaptor_layers is 3 in the config, 2 in the checkpoint"):
        xtrain.check_pretrained(want.replace(adaptor_layers=3), init=tmp_path / "sed")


def test_targets_match_hf_mbart50_tokenizer(env):
    from mlst_jax.convert.xmef import MBart50Vocab

    vocab = MBart50Vocab(env["mbart"] / "sentencepiece.bpe.model")
    text = (env["corpus"] / "covost_v2.en_de.tsv").read_text().splitlines()[1].split("\t")[2]  # German
    ids = corpus_data.encode_target(vocab, text, vocab.lang_id("de"))
    assert ids[0] == vocab.lang_id("de") and ids[-1] == 2 and 3 not in ids and vocab.decode(ids) == text
    ex = corpus_data.Example(None, tuple(ids), "en-de")
    batch = corpus_data.make_batch([ex], [np.ones(1000, np.float32)], corpus_data.Padding(2000, 0, 64), "utterance",
                                   rows=2)
    n = len(ids)  # decoder input: </s> (decoder start), then the labels shifted right; no loss on the code
    assert batch["dec_in"][0, :n].tolist() == [2, *ids[:-1]] and batch["labels"][0, :n].tolist() == ids
    assert batch["weights"][0, :n].tolist() == [0.0] + [1.0] * (n - 1) and not batch["weights"][1].any()
    assert batch["dec_in"][0, n] == 2 and (batch["dec_in"][0, n + 1:] == 1).all()  # </s> in, pad label out
    assert batch["waveforms"].shape == (2, 2000)
    try:
        tok = transformers.MBart50Tokenizer.from_pretrained(env["mbart"], src_lang="en_XX", tgt_lang="de_DE")
    except Exception as e:  # needs the optional slow-tokenizer dependencies
        pytest.skip(f"MBart50Tokenizer cannot load the tiny model: {e}")
    assert ids == tok(text_target=text).input_ids


def _error(env, capsys, args) -> str:
    assert cli.main(args) == 2
    return capsys.readouterr().err


def test_missing_manual_dir(env, capsys, tmp_path):
    err = _error(env, capsys, _run_args(env, f"--config.data.manual_dir={tmp_path / 'nowhere'}",
                                        workdir=tmp_path / "w"))
    assert "data.manual_dir=" in err and "does not exist" in err
    assert not (tmp_path / "w").exists()


def test_direction_without_data(env, capsys, tmp_path):
    err = _error(env, capsys, _run_args(env, "--config.data.src_langs=('de','ja')", "--config.data.directions=x-en",
                                        "--config.data.eval_directions=", workdir=tmp_path / "w"))
    assert "direction ja-en: no covost2 'train' data" in err and "covost_v2.ja_en" in err


def test_unknown_direction_language_and_missing_mbart_code(env, capsys, tmp_path):
    err = _error(env, capsys, _run_args(env, "--config.data.directions=xx-en", workdir=tmp_path / "w"))
    assert "data.directions='xx-en'" in err
    err = _error(env, capsys, _run_args(env, "--config.data.tgt_langs=('ca',)", "--config.data.directions=en-x",
                                        "--config.data.eval_directions=", workdir=tmp_path / "w"))
    assert "target language 'ca' has no mBART-50 language code" in err and "data.lang_codes" in err


def test_pretrained_dirs_of_the_wrong_kind(env, capsys, tmp_path):
    err = _error(env, capsys, _run_args(env, encoder=env["mbart"], workdir=tmp_path / "w"))
    assert "--encoder" in err and "'mbart' checkpoint" in err and "Wav2Vec2Model" in err
    err = _error(env, capsys, _run_args(env, decoder=env["w2v"], workdir=tmp_path / "w"))
    assert "--decoder" in err and "'wav2vec2' checkpoint" in err and "MBartForConditionalGeneration" in err
    args = [a for a in _run_args(env, workdir=tmp_path / "w") if a not in ("--decoder", str(env["mbart"]))]
    assert "--init SPEECH_ENCODER_DECODER_DIR" in _error(env, capsys, args)


def test_architecture_mismatch_names_the_fields(env, capsys, tmp_path):
    err = _error(env, capsys, _run_args(env, config=LARGE, workdir=tmp_path / "w"))
    assert "--encoder" in err and "model.xmef.encoder.hidden_size is 1024 in the config, 32 in the checkpoint" in err
    assert "model.xmef.encoder.num_hidden_layers is 24" in err


def test_joint_config_is_refused(env, capsys, tmp_path):
    err = _error(env, capsys, _run_args(env, config=f"{env['config']}:joint", workdir=tmp_path / "w"))
    assert "joint_shared_layers=12" in err and "not implemented" in err
