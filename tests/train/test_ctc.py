"""The auxiliary CTC loss: character labels, the loss against PyTorch's `ctc_loss`, the model's CTC layer, the
pipeline's labels and the training step (shared and language-specific plans)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.data.ctc_labels import ALPHABET, VOCAB_SIZE, char_labels, label_text
from mlst_jax.data.pipeline import make_eval_pipeline, make_train_pipeline
from mlst_jax.data.batch_shapes import PipelineConfig
from mlst_jax.data.vocab import train_vocab
from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.models.params import count_params
from mlst_jax.sharing import SharingPlan
from mlst_jax.sharing.strategies import make_plan
from mlst_jax.train import optim, sharding as shd, state as st, step as sp
from mlst_jax.train.ctc import ctc_loss_sums

FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
CFG = S2TConfig(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
                decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, conv_channels=16,
                conv_kernel_sizes=(3, 3), dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                ctc_vocab_size=VOCAB_SIZE)
LANGS = ("de", "es", "fr")


def test_char_labels_normalize_case_punctuation_and_spaces():
    assert char_labels("The neighbor\u2019s  shirt, is GRAY.") == [ALPHABET.index(c) + 1
                                                                  for c in "the neighbor's shirt is gray"]
    assert char_labels("¿Qué?") == [ALPHABET.index(c) + 1 for c in "que"]  # Latin letters lose their accents
    assert char_labels("Straße, Œuvre") == [ALPHABET.index(c) + 1 for c in "strasse oeuvre"]
    assert char_labels("привет") == []  # other scripts are not spelled
    assert label_text([0, 3, 3, 0, 3, 1, 0, 2]) == "bb a"
    assert char_labels(" ... ") == [] and min(char_labels("a z")) >= 1 and VOCAB_SIZE == 29


def test_ctc_loss_matches_torch_and_drops_rows_it_cannot_align():
    torch = pytest.importorskip("torch")
    r = np.random.RandomState(0)
    B, S, N = 4, 12, 9
    logits = r.randn(B, S, VOCAB_SIZE).astype(np.float32)
    frames = np.array([12, 9, 12, 4])
    texts = ["hello", "a b", "abc", "aa bb"]  # row 3: 5 labels + 2 repeats > 4 frames
    labels = np.zeros((B, N), np.int32)
    pads = np.ones((B, N), np.float32)
    for i, t in enumerate(texts):
        ids = char_labels(t)
        labels[i, :len(ids)], pads[i, :len(ids)] = ids, 0.0
    valid = (np.arange(S)[None] < frames[:, None]).astype(np.int32)
    row_w = np.array([1.0, 1.0, 0.0, 1.0], np.float32)  # row 2 is a padding row
    total, count = ctc_loss_sums(jnp.asarray(logits), valid, labels, pads, row_w)

    logp = torch.log_softmax(torch.tensor(logits), -1).transpose(0, 1)
    lens = [len(char_labels(t)) for t in texts]
    ref = torch.nn.functional.ctc_loss(logp, torch.tensor(labels, dtype=torch.long), torch.tensor(frames),
                                       torch.tensor(lens), blank=0, reduction="none").numpy()
    assert np.isinf(ref[3])  # torch: no alignment exists
    np.testing.assert_allclose(float(total), ref[0] + ref[1], rtol=1e-5)
    assert float(count) == lens[0] + lens[1] == 8
    grads = jax.grad(lambda x: ctc_loss_sums(x, valid, labels, pads, row_w)[0])(jnp.asarray(logits))
    assert np.isfinite(np.asarray(grads)).all() and np.abs(np.asarray(grads)[2:]).max() == 0.0


def test_model_ctc_layer_only_when_asked():
    feats, lens, toks = jnp.ones((2, 20, 80)), jnp.array([20, 13]), jnp.full((2, 5), 7)
    plain = S2TTransformer(CFG.replace(ctc_vocab_size=0))
    p0 = plain.init(jax.random.PRNGKey(0), feats, lens, toks)["params"]
    model = S2TTransformer(CFG)
    p = model.init(jax.random.PRNGKey(0), feats, lens, toks)["params"]
    assert "ctc_proj" not in p0 and p["ctc_proj"]["kernel"].shape == (16, VOCAB_SIZE)
    assert count_params(p) - count_params(p0) == 16 * VOCAB_SIZE + VOCAB_SIZE
    logits, ctc, valid = model.apply({"params": p}, feats, lens, toks, method=model.with_ctc)
    np.testing.assert_array_equal(logits, model.apply({"params": p}, feats, lens, toks))
    assert ctc.shape == (2, 5, VOCAB_SIZE) and np.asarray(valid).sum(1).tolist() == [5, 4]
    with pytest.raises(ValueError, match="ctc_vocab_size"):
        plain.apply({"params": p0}, feats, lens, toks, method=plain.with_ctc)
    with pytest.raises(ValueError, match="ctc_vocab_size"):
        CFG.replace(ctc_vocab_size=-1)


def test_hf_export_leaves_the_ctc_layer_out(tmp_path):
    from mlst_jax.convert.hf import load_hf_speech2text, save_hf_speech2text

    p = S2TTransformer(CFG).init(jax.random.PRNGKey(0), jnp.ones((1, 20, 80)), jnp.array([20]),
                                 jnp.full((1, 5), 7))["params"]
    cfg, loaded = load_hf_speech2text(save_hf_speech2text(tmp_path / "hf", CFG, p))
    assert cfg.ctc_vocab_size == 0 and "ctc_proj" not in loaded
    np.testing.assert_array_equal(loaded["decoder"]["lm_head"]["kernel"], p["decoder"]["lm_head"]["kernel"])


def test_enc_and_grad_candidates_keep_the_ctc_layer_shared():
    p = S2TTransformer(CFG).init(jax.random.PRNGKey(0), jnp.ones((1, 20, 80)), jnp.array([20]),
                                 jnp.full((1, 5), 7))["params"]
    plan = make_plan("enc", p, LANGS)
    tables = dict(plan.leaves())
    assert tables[("ctc_proj", "kernel")].num_copies == 1
    assert tables[("decoder", "layers_0", "ffn", "fc1", "kernel")].num_copies == 3


@pytest.fixture(scope="module")
def pipeline_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta eins zwei drei".split()
    vocab = train_vocab([" ".join(rng.choice(words, 3)) for _ in range(100)],
                        tmp_path_factory.mktemp("vocab") / "spm", 40, LANGS)
    sources = {}
    for lang in LANGS:
        sources[lang] = [dict(fbank=rng.standard_normal((30, 80)).astype(np.float16), n_frames=30,
                              tgt_lang=lang.encode(), tgt_text=" ".join(rng.choice(words, 3)).encode(),
                              src_text=("Hello, World number %d!" % i if i != 3 else "x" * 40).encode(), id=b"x")
                         for i in range(8)]
    return vocab, sources


def test_pipeline_carries_transcript_labels_on_training_batches_only(pipeline_data):
    vocab, sources = pipeline_data
    cfg = PipelineConfig(max_frames=32, frame_buckets=(32,), max_frames_per_batch=32 * 6, token_buckets=(8,),
                         max_tokens=8, langs=LANGS, specaugment=None, read_threads=0, ctc_max_chars=24)
    pipe = make_train_pipeline(sources, vocab, cfg)
    seen = 0
    for _ in range(6):
        b = next(pipe)
        assert b["ctc_labels"].shape == b["target"].shape[:2] + (24,)
        for g, lang in enumerate(b["group_lang"]):
            for j in np.flatnonzero(b["valid"][g]):
                i = int(b["index"][g, j])
                n = int((b["ctc_label_paddings"][g, j] == 0).sum())
                want = [] if i == 3 else char_labels("Hello, World number %d!" % i)
                assert b["ctc_labels"][g, j, :n].tolist() == want and not b["ctc_labels"][g, j, n:].any()
                seen += 1
    assert seen >= 8 and sum(pipe.stats.ctc_too_long.values()) >= 1
    assert "too long for CTC" in pipe.stats.summary()
    pipe.close()
    ev = make_eval_pipeline(sources["de"], vocab, cfg, 4, lang="de")
    assert "ctc_labels" not in next(iter(ev))
    ev.close()
    with pytest.raises(ValueError, match="src_text"):
        bad = [{k: v for k, v in ex.items() if k != "src_text"} for ex in sources["de"]]
        p = make_train_pipeline({**sources, "de": bad}, vocab,
                                PipelineConfig(**{**cfg.__dict__, "on_bad_example": "raise"}))
        for _ in range(8):
            next(p)


def ctc_batch(G=3, b=2, T=20, U=6, N=12, seed=0):
    r = np.random.RandomState(seed)
    target = r.randint(4, CFG.vocab_size, (G, b, U)).astype(np.int32)
    labels = np.zeros((G, b, N), np.int32)
    pads = np.ones((G, b, N), np.float32)
    for g in range(G):
        for j in range(b):
            ids = char_labels(["ab", "c d"][j])
            labels[g, j, :len(ids)], pads[g, j, :len(ids)] = ids, 0.0
    return dict(features=r.randn(G, b, T, 80).astype(np.float32), feature_lengths=np.full((G, b), T, np.int32),
                decoder_input=target, target=target, loss_weights=np.ones((G, b, U), np.float32),
                valid=np.ones((G, b), np.int32), group_lang=np.array([2, 0, 2], np.int32),
                ctc_labels=labels, ctc_label_paddings=pads)


def test_train_step_adds_weighted_ctc_for_shared_and_grouped_plans():
    model = S2TTransformer(CFG)
    batch = ctc_batch()
    mesh = shd.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    tx = optim.make_optimizer(dict(lr=1e-2, schedule="constant", clip_norm=0.0))
    state = st.create_train_state(model, tx, jax.random.PRNGKey(0), batch, mesh, compiler_options=FAST)
    shared = SharingPlan.shared(state.params, LANGS)
    params = jax.device_get(state.params)

    flat = sp.flatten_batch({k: v for k, v in batch.items() if k != "group_lang"})
    _, ctc, valid = model.apply({"params": params}, flat["features"], flat["feature_lengths"],
                                flat["decoder_input"], method=model.with_ctc)
    want_sum, want_n = ctc_loss_sums(ctc, valid, flat["ctc_labels"], flat["ctc_label_paddings"], flat["valid"])
    want = float(want_sum / want_n)

    def step(weight, plan=None, s=state):
        keys = tuple(batch) if plan is not None else tuple(k for k in batch if k != "group_lang")
        fn = sp.make_train_step(model, tx, label_smoothing=0.1, mesh=mesh, state_shardings=st.shardings_of(s),
                                batch_shardings=shd.stratified_batch_shardings(mesh, keys), donate=False,
                                compiler_options=FAST, plan=plan, ctc_weight=weight)
        return fn(s, {k: batch[k] for k in keys})

    new0, m0 = step(0.0)
    new1, m1 = step(0.5)
    assert "ctc" not in m0 and abs(float(m1["ctc"]) - want) < 1e-5
    assert abs(float(m0["loss"]) - float(m1["loss"])) < 1e-6  # `loss` stays the translation loss
    np.testing.assert_array_equal(new0.params["ctc_proj"]["kernel"], params["ctc_proj"]["kernel"])
    assert np.abs(np.asarray(new1.params["ctc_proj"]["kernel"]) - params["ctc_proj"]["kernel"]).max() > 0

    plan = make_plan("enc", state.params, LANGS)
    p = plan.transfer(state.params, shared)
    grouped = state.replace(params=p, opt_state=tx.init(p))
    new_g, m_g = step(0.5, plan, grouped)
    assert abs(float(m_g["ctc"]) - want) < 1e-5 and abs(float(m_g["loss"]) - float(m1["loss"])) < 1e-5
    np.testing.assert_allclose(new_g.params["ctc_proj"]["kernel"], new1.params["ctc_proj"]["kernel"], atol=1e-6)
