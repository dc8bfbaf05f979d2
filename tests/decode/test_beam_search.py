"""Beam search vs. independent numpy references, brute force and HF ``generate``."""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from mlst_jax.decode import BeamOutput, beam_search, greedy_search, strip_and_decode_ids

START, PAD, EOS = 0, 1, 2
V, H, T = 12, 5, 8
OFFSETS = np.array([0, 1, 2, 3])  # offset 3 strongly prefers EOS, offset 2 avoids it
MAX_LEN = np.array([8, 5, 3, 8])
LENGTH_PENALTIES = [0.0, 0.6, 1.0, 2.0]


def _tables(vocab, seed, scale):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(vocab, vocab)) * scale
    c = rng.normal(size=(4, vocab))
    d = rng.normal(size=(H, vocab))
    e = rng.normal(size=(T + 1, vocab)) * 0.5
    a[:, PAD] = -30.0
    c[3, EOS] += 20.0
    c[2, EOS] -= 3.0
    return tuple(x.astype(np.float32) for x in (a, c, d, e))


TABLES = _tables(V, 2, 0.7)  # flat enough that HF's early_stopping=False differs from True
TINY_TABLES = _tables(4, 1, 1.5)
TRACES = {"main": 0}


def _make_step_fn(tables, counter=None):
    a, c, d, e = map(jnp.asarray, tables)

    def step_fn(tokens, cache, step):
        if counter is not None:
            TRACES[counter] += 1
        hist = (cache["hist"] * 7 + tokens + 1) % H
        logits = a[tokens] + c[cache["offset"]] + d[hist] + e[cache["step"]]
        logits = logits + jnp.where(cache["step"] == step, 0.0, jnp.nan)[:, None]
        return logits, {"offset": cache["offset"], "hist": hist, "step": cache["step"] + 1}

    return step_fn


STEP_FN = _make_step_fn(TABLES, "main")
TINY_STEP_FN = _make_step_fn(TINY_TABLES)


def _cache(offsets, beam):
    n = len(offsets) * beam
    return {"offset": jnp.repeat(jnp.asarray(offsets, jnp.int32), beam),
            "hist": jnp.zeros(n, jnp.int32), "step": jnp.zeros(n, jnp.int32)}


def _ref_logprobs(tables, offset, seq):
    """Log-probs of the next token after ``seq`` (decoder start first), float64."""
    a, c, d, e = (x.astype(np.float64) for x in tables)
    h = 0
    for tok in seq:
        h = (h * 7 + tok + 1) % H
    logits = a[seq[-1]] + c[offset] + d[h] + e[len(seq) - 1]
    return logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()


def _ref_beam(tables, offset, k, max_len, lenpen, prefix=()):
    """fairseq SequenceGenerator, one sentence, plain Python."""
    prefix = [p for p in prefix if p != PAD]
    max_len = min(max(max_len, len(prefix) + 1), T)
    alive, finished = [([START], 0.0)], []
    for step in range(max_len):
        cands = []
        for beam, (seq, score) in enumerate(alive):
            lp = _ref_logprobs(tables, offset, seq)
            for tok in range(len(lp)):
                if tok == PAD or (step < len(prefix) and tok != prefix[step]):
                    continue
                if step == max_len - 1 and tok != EOS:
                    continue
                cands.append((score + lp[tok], beam, tok))
        cands = sorted(cands, key=lambda x: (-x[0], x[1], x[2]))[: 2 * k]
        new_alive = []
        for rank, (score, beam, tok) in enumerate(cands):
            seq = alive[beam][0] + [tok]
            if tok == EOS:
                if rank < k and len(finished) < k:
                    finished.append((seq[1:], score / (step + 1) ** lenpen))
            elif len(new_alive) < k:
                new_alive.append((seq, score))
        alive = new_alive
        if len(finished) == k or not alive:
            break
    return sorted(finished, key=lambda x: -x[1])


def _check_against_ref(out, k, lenpen, prefix=None):
    for b, off in enumerate(OFFSETS):
        ref = _ref_beam(TABLES, off, k, MAX_LEN[b], lenpen, () if prefix is None else prefix[b])
        assert np.isneginf(np.asarray(out.scores[b, len(ref):])).all()
        for j, (seq, score) in enumerate(ref):
            assert int(out.lengths[b, j]) == len(seq)
            np.testing.assert_array_equal(out.tokens[b, j], seq + [PAD] * (T - len(seq)))
            np.testing.assert_allclose(float(out.scores[b, j]), score, rtol=1e-6, atol=1e-5)


def _run(k, lenpen, prefix=None, offsets=OFFSETS):
    return beam_search(STEP_FN, _cache(offsets, k), batch_size=len(offsets), beam_size=k,
                       max_len=jnp.asarray(MAX_LEN), decoder_start_id=START, eos_id=EOS,
                       pad_id=PAD, prefix=prefix, length_penalty=lenpen, n_best=k, max_steps=T)


def test_greedy_equals_numpy_argmax_loop():
    out = greedy_search(STEP_FN, _cache(OFFSETS, 1), batch_size=4, max_len=jnp.asarray(MAX_LEN),
                        decoder_start_id=START, eos_id=EOS, pad_id=PAD, max_steps=T)
    assert isinstance(out, BeamOutput) and out.tokens.shape == (4, 1, T)
    for b, off in enumerate(OFFSETS):
        seq, total = [START], 0.0
        while seq[-1] != EOS:
            lp = _ref_logprobs(TABLES, off, seq)
            lp[PAD] = -np.inf
            if len(seq) == MAX_LEN[b]:
                lp[np.arange(V) != EOS] = -np.inf
            seq.append(int(np.argmax(lp)))
            total += lp[seq[-1]]
        np.testing.assert_array_equal(out.tokens[b, 0], seq[1:] + [PAD] * (T + 1 - len(seq)))
        np.testing.assert_allclose(float(out.scores[b, 0]), total / (len(seq) - 1), rtol=1e-6, atol=1e-5)
    assert strip_and_decode_ids(out, EOS, PAD)[0] == [t for t in np.asarray(out.tokens[0, 0]) if t not in (EOS, PAD)]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_beam_equals_fairseq_reference(k):
    for lenpen in LENGTH_PENALTIES:
        _check_against_ref(_run(k, lenpen), k, lenpen)


def test_forced_prefix_and_eos_blocked():
    prefix = np.array([[5, 7], [3, PAD], [9, 4], [6, 8]])
    for lenpen in (0.0, 1.0):
        out = _run(3, lenpen, prefix=jnp.asarray(prefix))
        _check_against_ref(out, 3, lenpen, prefix)
        toks, valid = np.asarray(out.tokens), np.isfinite(np.asarray(out.scores))
        for b in (0, 2, 3):
            assert (toks[b, valid[b], :2] == prefix[b]).all()
        assert (toks[1, :, 0] == 3).all() and valid.sum() == 10
        # offset 3 wants EOS at once: it comes right after the forced prefix.
        assert toks[3, 0, 2] == EOS and int(out.lengths[3, 0]) == 3
    ids = strip_and_decode_ids(out, EOS, PAD)
    assert ids[3] == [6, 8] and ids[0][:2] == [5, 7]


def test_max_len_per_example():
    out = _run(3, 1.0)
    lengths, toks = np.asarray(out.lengths), np.asarray(out.tokens)
    assert (lengths <= MAX_LEN[:, None]).all()
    assert (lengths[2] == MAX_LEN[2]).all()  # EOS-averse sentence is cut at its max_len
    for b, j in itertools.product(range(4), range(3)):
        assert toks[b, j, lengths[b, j] - 1] == EOS and (toks[b, j, lengths[b, j]:] == PAD).all()


@pytest.mark.parametrize("lenpen", [0.0, 0.6, 1.0, 2.0])
def test_large_beam_finds_brute_force_optimum(lenpen):
    max_len, k = 4, 16
    out = beam_search(TINY_STEP_FN, _cache(OFFSETS, k), batch_size=4, beam_size=k, max_len=max_len,
                      decoder_start_id=START, eos_id=EOS, pad_id=PAD, length_penalty=lenpen,
                      n_best=k, max_steps=max_len)
    for b, off in enumerate(OFFSETS):
        hyps = []
        for n in range(max_len):
            for body in itertools.product([0, 3], repeat=n):
                seq = [START, *body, EOS]
                total = sum(_ref_logprobs(TINY_TABLES, off, seq[:i])[seq[i]] for i in range(1, len(seq)))
                hyps.append((total / (n + 1) ** lenpen, seq[1:]))
        hyps.sort(key=lambda x: -x[0])
        best_score, best_seq = hyps[0]
        assert np.asarray(out.tokens[b, 0, : len(best_seq)]).tolist() == best_seq
        np.testing.assert_allclose(float(out.scores[b, 0]), best_score, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.scores[b, : len(hyps)]), [h[0] for h in hyps], rtol=1e-6, atol=1e-5)
        assert np.isneginf(np.asarray(out.scores[b, len(hyps):])).all()


def test_no_retrace_with_new_cache_contents():
    first = _run(2, 1.0)
    traces = TRACES["main"]
    assert traces > 0
    second = _run(2, 0.5, offsets=OFFSETS[::-1].copy())
    assert TRACES["main"] == traces
    assert not np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="n_best"):
        beam_search(STEP_FN, _cache(OFFSETS, 2), batch_size=4, beam_size=2, max_len=4, decoder_start_id=START,
                    eos_id=EOS, pad_id=PAD, n_best=3, max_steps=T)
    with pytest.raises(ValueError, match="early_stopping"):
        beam_search(STEP_FN, _cache(OFFSETS, 2), batch_size=4, beam_size=2, max_len=4, decoder_start_id=START,
                    eos_id=EOS, pad_id=PAD, early_stopping="always", max_steps=T)


@pytest.fixture(scope="module")
def hf_model():
    """A transformers ``PreTrainedModel`` + ``GenerationMixin`` computing the same toy LM."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_outputs import CausalLMOutput

    class Config(transformers.PretrainedConfig):
        model_type = "toy_markov"

    class MarkovLM(transformers.PreTrainedModel, transformers.GenerationMixin):
        config_class = Config

        def __init__(self, config):
            super().__init__(config)
            self.dummy = torch.nn.Parameter(torch.zeros(1))
            self.tables = [torch.from_numpy(x) for x in TABLES]
            self.offsets = torch.from_numpy(OFFSETS)
            self.post_init()

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            a, c, d, e = self.tables
            n, length = input_ids.shape
            hist = torch.zeros(n, dtype=torch.long)
            for j in range(length):
                hist = (hist * 7 + input_ids[:, j] + 1) % H
            off = self.offsets.repeat_interleave(n // len(self.offsets))
            logits = torch.zeros(n, length, V)
            logits[:, -1] = a[input_ids[:, -1]] + c[off] + d[hist] + e[length - 1]
            return CausalLMOutput(logits=logits)

    return torch, transformers, MarkovLM(Config(vocab_size=V, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=START))


@pytest.mark.torch
@pytest.mark.parametrize("early_stopping,prefix_mode", [
    (True, None), (False, None), ("never", None), (False, "forced"), ("never", "prompt")])
def test_hf_compat_matches_transformers_generate(hf_model, early_stopping, prefix_mode):
    torch, transformers, model = hf_model
    k, m, b = 3, 6, len(OFFSETS)
    prompt = torch.full((b, 1), START)
    prefix, count_prefix, max_len, extra = None, True, m, {}
    if prefix_mode == "forced":
        prefix, extra = jnp.full((b, 1), 5), {"forced_bos_token_id": 5}
    elif prefix_mode == "prompt":
        tags = torch.tensor([[5], [7], [9], [4]])
        prompt, prefix, count_prefix, max_len = torch.cat([prompt, tags], 1), jnp.asarray(tags.numpy()), False, m + 1
    for lenpen in (0.0, 1.0, 2.0):
        config = transformers.GenerationConfig(
            num_beams=k, num_return_sequences=k, max_new_tokens=m, do_sample=False, early_stopping=early_stopping,
            length_penalty=lenpen, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=START, use_cache=False,
            output_scores=True, return_dict_in_generate=True, **extra)
        with torch.no_grad():
            hf = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config)
        hf_tokens = hf.sequences[:, 1:].numpy().reshape(b, k, -1)
        hf_scores = hf.sequences_scores.numpy().reshape(b, k)
        out = beam_search(STEP_FN, _cache(OFFSETS, k), batch_size=b, beam_size=k, max_len=max_len,
                          decoder_start_id=START, eos_id=EOS, pad_id=PAD, prefix=prefix, length_penalty=lenpen,
                          n_best=k, max_steps=T, early_stopping=early_stopping, hf_compat=True,
                          count_prefix=count_prefix)
        width = hf_tokens.shape[-1]
        np.testing.assert_array_equal(np.asarray(out.tokens[..., :width]), hf_tokens)
        assert (np.asarray(out.tokens[..., width:]) == PAD).all()
        np.testing.assert_allclose(np.asarray(out.scores), hf_scores, rtol=1e-6, atol=1e-5)
        if early_stopping is True and prefix_mode is None:
            # Default (fairseq) mode agrees with HF's early_stopping=True on the best hypothesis of
            # every sentence whose K finished hypotheses all ended with EOS before max_new_tokens.
            fair = _run(k, lenpen)
            ended = [i for i in range(b) if all(EOS in row for row in hf_tokens[i]) and MAX_LEN[i] >= m]
            assert ended
            for i in ended:
                np.testing.assert_array_equal(np.asarray(fair.tokens[i, 0, :width]), hf_tokens[i, 0])
                np.testing.assert_allclose(float(fair.scores[i, 0]), hf_scores[i, 0], rtol=1e-6, atol=1e-5)
