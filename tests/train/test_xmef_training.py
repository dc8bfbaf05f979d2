"""XMEF on the one training stack: `configs/xmef_synth_tiny.py` on a tiny synthetic CoVoST 2 corpus, started from
tiny random HF wav2vec 2.0 / mBART directories. LNA trains only its mask; every mesh gives the 1-device result; a
killed run resumes bit for bit; `mlst evaluate`, `mlst average` and `mlst translate` serve the run; bad configs
and checkpoints fail before anything heavy is loaded, naming the field."""
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from train_runs import finish, kill_and_resume, params_at, start_main
from xmef_runs import XMEF_TINY, xmef_args

pytestmark = [pytest.mark.slow, pytest.mark.torch]

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

STEPS, EVERY = 12, 4
RUN = {"train.max_updates": STEPS, "train.checkpoint_every": EVERY, "train.log_every": 1,
       "train.keep_checkpoints": 3, "optim.lr": 0.02}


def load(args):
    from mlst_jax.train.config import load_config

    return load_config(args[0].split("=", 1)[1], args[1:])


def pretrained_params(xmef_data, c):
    from mlst_jax.train.tasks import get_task

    task = get_task(c)
    return task.pretrained_params(task.model_config(task.load_vocab("/nonexistent")))


@pytest.fixture(scope="module")
def reference(xmef_data, subprocess_env, tmp_path_factory):
    """An uninterrupted run (`python -m mlst_jax.main`): (workdir, printed result, final params)."""
    workdir = tmp_path_factory.mktemp("xmef_reference") / "run"
    result = finish(start_main(xmef_args(xmef_data, RUN), workdir, subprocess_env), workdir)
    return workdir, result, params_at(workdir, STEPS)


def test_lna_trains_only_its_mask_and_the_loss_falls(xmef_data, reference):
    from mlst_jax.finetune import lna

    workdir, result, params = reference
    assert result["step"] == STEPS
    pre = pretrained_params(xmef_data, load(xmef_args(xmef_data, RUN)))
    mask = lna.trainable_mask(params, "lna-minimalist", model=lna.XMEF)
    frozen = trained = 0
    for (path, flag), a, b in zip(jax.tree_util.tree_flatten_with_path(mask)[0], jax.tree.leaves(params),
                                  jax.tree.leaves(pre), strict=True):
        name = jax.tree_util.keystr(path)
        if flag:
            trained += 1
            if "adaptor" not in name:  # the adaptor is new: nothing to compare with
                assert not np.array_equal(a, b), f"trained leaf {name} did not change"
        else:
            frozen += 1
            assert np.array_equal(a, b), f"frozen leaf {name} changed"
    assert frozen > trained > 0
    losses = [json.loads(l)["loss"] for l in (workdir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in l]
    assert len(losses) == STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses


def test_sigkill_then_resume_is_bitwise_exact(xmef_data, reference, subprocess_env, tmp_path):
    _, ref_result, ref_params = reference
    result, killed_at, _ = kill_and_resume(xmef_args(xmef_data, RUN), tmp_path / "run", subprocess_env, EVERY, STEPS)
    assert result["train/loss"] == ref_result["train/loss"], f"killed after step {killed_at}"
    for x, y in zip(jax.tree.leaves(params_at(tmp_path / "run", STEPS)), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_evaluate_average_and_translate(xmef_data, reference, tmp_path, capsys):
    from mlst_jax import cli
    from mlst_jax.train.run import Run
    from mlst_jax.translator import Translator

    workdir = reference[0]
    args = xmef_args(xmef_data, RUN)
    assert cli.main(["evaluate", "--config", args[0].split("=", 1)[1], *args[1:], "--workdir", str(workdir)]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])  # after TFDS's preparation of en_de
    assert {"de-en", "en-fr", "en-de", "avg"} <= set(scores) and scores["zero_shot"] == ["en-de"]
    assert all(0 <= scores[k] <= 100 for k in ("de-en", "en-fr", "en-de"))
    rows = {line.split()[0]: line.split()[1:] for line in scores["matrix"].splitlines()[1:4]}
    assert rows["de→"][0].endswith("*") and not rows["en→"][0].endswith("*")  # de→en supervised, en→de not
    hyps = (workdir / "eval" / "test" / "en-de.hyp").read_text().splitlines()
    refs = (workdir / "eval" / "test" / "en-de.ref").read_text().splitlines()
    assert len(hyps) == len(refs) == 3

    assert cli.main(["average", "--workdir", str(workdir), "--last", "2", "--out", str(tmp_path / "model")]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == [STEPS - EVERY, STEPS]
    exported = Translator.from_pretrained(tmp_path / "model")
    with Run(workdir) as run:
        expected = run.averaged_params(2)
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(exported.params), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))
    assert exported.cmvn == "utterance" and exported.config.decoder.vocab_size == xmef_data.sp_size + 54
    import soundfile

    wav = np.sin(np.arange(24000) / 7.0).astype(np.float32) * 0.3
    soundfile.write(tmp_path / "a.wav", wav, 16000)
    assert cli.main(["translate", "--checkpoint", str(tmp_path / "model"), "--tgt-lang", "fr", "--beam", "2",
                     "--max-len-b", "5", str(tmp_path / "a.wav")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["tgt_lang"] == "fr" and isinstance(line["translation"], str)


# -- meshes ----------------------------------------------------------------------------------------------------

MESHES = {"1dev": (1, 1, 1), "data8": (8, 1, 1), "data2_fsdp4": (2, 4, 1), "data2_fsdp2_tensor2": (2, 2, 2)}
FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def test_lna_meshes_match_one_device(xmef_data):
    """3 updates of the tiny XMEF with the LNA-Minimalist mask on every mesh: the loss and the parameters of one
    device within 1e-5, every parameter laid out by the rules table, frozen parameters without Adam state."""
    from mlst_jax.train import sharding as shd
    from mlst_jax.train import state as st
    from mlst_jax.train import step as sp
    from mlst_jax.train.optim import optimizer_of
    from mlst_jax.train.tasks import get_task

    c = load(xmef_args(xmef_data, {"optim.lr": 1e-3, "optim.eps": 1e-4}))
    task = get_task(c)
    cfg = task.model_config(task.load_vocab("/nonexistent"))
    model = task.model(cfg)
    pre = pretrained_params(xmef_data, c)
    r = np.random.RandomState(0)
    n, u, rows = 24000, 9, 8
    lengths = np.array([24000, 17000, 20000, 0, 22000, 24000, 13000, 0], np.int32)
    tgt_len = np.array([7, 3, 6, 0, 8, 5, 3, 0])
    target = r.randint(4, cfg.decoder.vocab_size - 60, (rows, u)).astype(np.int32)
    batch = {"features": (r.randn(rows, n) * (np.arange(n) < lengths[:, None])).astype(np.float32),
             "feature_lengths": lengths, "decoder_input": np.where(np.arange(u) < tgt_len[:, None], target, 1),
             "target": target, "loss_weights": ((np.arange(u) < tgt_len[:, None]) & (np.arange(u) > 0)).astype(
                 np.float32), "valid": (tgt_len > 0).astype(np.int32)}
    example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    base = st.abstract_params(model, example)
    tx = optimizer_of(c, task.trainable_mask(base))
    keys = task.train_keys(True)
    out = {}
    for name, shape in MESHES.items():
        mesh = shd.make_mesh(*shape, devices=jax.devices()[:1] if name == "1dev" else None)
        target_state = st.abstract_train_state(model, tx, jax.random.PRNGKey(0), example, mesh)
        state = st.train_state_from_params(pre, tx, jax.random.PRNGKey(0), target_state)
        rules = shd.param_shardings(base, mesh)
        for got, want in zip(jax.tree.leaves(st.shardings_of(state.params)), jax.tree.leaves(rules), strict=True):
            assert got.spec == want.spec
        n_moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)
        assert n_moments == 2 * sum(np.size(x) for x, m in zip(jax.tree.leaves(pre), jax.tree.leaves(
            task.trainable_mask(base))) if m)  # Adam's two moments of the trained leaves only
        shardings = task.batch_shardings(mesh, keys)
        train = sp.make_train_step(model, tx, mesh=mesh, state_shardings=st.shardings_of(state),
                                   batch_shardings=shardings, compiler_options=FAST, **task.step_options())
        losses = []
        for _ in range(3):
            state, metrics = train(state, {k: jax.device_put(batch[k], shardings[k]) for k in keys})
            losses.append(float(metrics["loss"]))
        out[name] = (losses, jax.device_get(state.params))
    ref_losses, ref_params = out.pop("1dev")
    for name, (losses, params) in out.items():
        np.testing.assert_allclose(losses, ref_losses, atol=1e-5, rtol=0, err_msg=name)
        for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5, rtol=0, err_msg=name)
    assert ref_losses[-1] < ref_losses[0]


# -- pretrained parts and config errors ---------------------------------------------------------------------------


def test_targets_match_hf_mbart50_tokenizer(xmef_data):
    from mlst_jax.convert.xmef import MBart50Vocab

    vocab = MBart50Vocab(xmef_data.mbart / "sentencepiece.bpe.model", {"ca": "es_XX"})
    text = (xmef_data.corpus / "covost_v2.en_de.tsv").read_text().splitlines()[1].split("\t")[2]  # German
    ids = vocab.encode(text, "de")
    assert ids[0] == vocab.lang_id("de") and ids[-1] == 2 and 3 not in ids and vocab.decode(ids) == text
    assert vocab.lang_id("ca") == vocab.lang_id("es") != vocab.lang_id("de")
    try:
        tok = transformers.MBart50Tokenizer.from_pretrained(xmef_data.mbart, src_lang="en_XX", tgt_lang="de_DE")
    except Exception as e:  # needs the optional slow-tokenizer dependencies
        pytest.skip(f"MBart50Tokenizer cannot load the tiny model: {e}")
    assert ids == tok(text_target=text).input_ids


def test_init_model_directory_loads_with_its_adaptor(xmef_data, reference, tmp_path):
    """An HF SpeechEncoderDecoderModel directory (the trained run exported) is `init.model`; its adaptor must match
    the config's."""
    from mlst_jax.convert.xmef import save_hf_xmef
    from mlst_jax.train import config as cfglib

    params = params_at(reference[0], STEPS)
    c = load(xmef_args(xmef_data, {}))
    from mlst_jax.train.tasks import get_task

    task = get_task(c)
    cfg = task.model_config(task.load_vocab("/nonexistent"))
    save_hf_xmef(tmp_path / "sed", cfg, jax.tree.map(np.asarray, params))
    shutil.copy(xmef_data.mbart / "sentencepiece.bpe.model", tmp_path / "sed" / "sentencepiece.bpe.model")
    c = load(xmef_args(xmef_data, {"init.encoder": "", "init.decoder": "", "init.model": tmp_path / "sed"}))
    cfglib.validate(c)
    task = get_task(c)
    loaded = task.pretrained_params(task.model_config(task.load_vocab("/nonexistent")))
    for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(x, y)
    c.model.xmef.adaptor_layers = 3
    with pytest.raises(ValueError, match=r"model.xmef.adaptor_layers is 3 in the config, 2 in the checkpoint"):
        cfglib.validate(c)


@pytest.mark.parametrize("fields,message", [
    ({"init.encoder": "MBART"}, r"init.encoder=.*'mbart' checkpoint.*Wav2Vec2Model"),
    ({"init.decoder": "W2V"}, r"init.decoder=.*'wav2vec2' checkpoint.*MBartForConditionalGeneration"),
    ({"init.decoder": ""}, "init.decoder is not set"),
    ({"model.xmef.encoder.hidden_size": 64}, r"model.xmef.encoder.hidden_size is 64 in the config, 32 in the "
                                             r"checkpoint"),
    ({"data.directions": "xx-en"}, "data.directions='xx-en'"),
    ({"data.tgt_langs": ("ca",), "data.directions": "en-x", "data.eval_directions": ""},
     "target language 'ca' has no mBART-50 language code.*data.lang_codes"),
    ({"data.specaugment": "ld"}, "data.specaugment='ld'"),
    ({"sharing.strategy": "enc"}, "sharing plans are an S2T feature"),
    ({"finetune.trainable": "adapters"}, "finetune.trainable='adapters' is not an XMEF variant"),
    ({"optim.ctc_weight": 0.5}, "XMEF has no CTC layer"),
    ({"data.bitext": "/tmp"}, "extra parallel text trains the joint model's text path"),
    ({"data.manual_dir": "/nowhere"}, "data.manual_dir='/nowhere' does not exist"),
])
def test_config_errors_name_the_field(xmef_data, fields, message):
    from mlst_jax.train import config as cfglib

    where = {"MBART": xmef_data.mbart, "W2V": xmef_data.w2v}
    c = load(xmef_args(xmef_data, {k: where.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}))
    with pytest.raises(ValueError, match=message):
        cfglib.validate(c)


def test_joint_with_a_mask_that_freezes_the_shared_layers_is_refused(xmef_data):
    from mlst_jax.train import config as cfglib

    c = load(xmef_args(xmef_data, {"finetune.trainable": "lna-minimalist"}, arg="joint"))
    with pytest.raises(ValueError, match="finetune.trainable='lna-minimalist' freezes the layers joint training"):
        cfglib.validate(c)


def test_large_config_rejects_the_tiny_checkpoints(xmef_data):
    from mlst_jax.train import config as cfglib
    from mlst_jax.train.config import load_config

    c = load_config(str(XMEF_TINY.with_name("xmef_covost_large.py")),
                    [f"--config.init.encoder={xmef_data.w2v}", f"--config.init.decoder={xmef_data.mbart}",
                     f"--config.data.manual_dir={xmef_data.corpus}", f"--config.data.data_dir={xmef_data.data_dir}"])
    with pytest.raises(ValueError, match="model.xmef.encoder.hidden_size is 1024 in the config, 32 in the checkpoint"):
        cfglib.validate(c)


def test_joint_speech_text_training_reports_st_and_mt_bleu(xmef_data, subprocess_env, tmp_path):
    """`:joint` (1 shared layer; every parameter trains) with extra de→en bitext (`data.bitext`): ST and MT losses
    fall, the bitext rows add MT tokens only, the text encoder and the shared layers change, and the evaluation
    scores ST and MT (the transcripts) per direction."""
    lines = [l.split("\t") for l in (xmef_data.corpus / "covost_v2.de_en.tsv").read_text().splitlines()[1:]]
    (tmp_path / "bitext").mkdir()
    (tmp_path / "bitext" / "de-en.tsv").write_text("".join(f"{l[1]} {l[1]}\t{l[2]} {l[2]}\n" for l in lines))
    args = xmef_args(xmef_data, {**RUN, "train.eval_every": STEPS, "optim.lr": 5e-3,
                                 "data.bitext": tmp_path / "bitext"}, arg="joint")
    result = finish(start_main(args, tmp_path / "run", subprocess_env), tmp_path / "run")
    assert "de-en+bitext: kept" in Path(f"{tmp_path / 'run'}.err").read_text()
    tmp_path = tmp_path / "run"
    for key in ("eval/bleu_de-en", "eval/bleu_en-fr", "eval/mt_bleu_de-en", "eval/mt_bleu_en-fr"):
        assert 0 <= result[key] <= 100, key
    logs = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"mt_loss"' in l]
    assert len(logs) == STEPS
    assert all(m["mt_ntokens"] >= m["ntokens"] for m in logs) and any(m["mt_ntokens"] > m["ntokens"] for m in logs)
    for key in ("loss", "mt_loss"):
        assert np.mean([m[key] for m in logs[-3:]]) < np.mean([m[key] for m in logs[:3]]) - 0.05, key
    params = params_at(tmp_path, STEPS)
    assert set(params) == {"encoder", "adaptor", "text_encoder", "shared_layers", "decoder"}
    pre = pretrained_params(xmef_data, load(args))
    for part in ("text_encoder", "shared_layers", "encoder", "decoder"):
        assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params[part]),
                                                            jax.tree.leaves(pre[part]))), part
