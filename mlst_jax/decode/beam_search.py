"""Model-agnostic, fully jitted beam search (fairseq semantics, optional exact HF mode).

The model side supplies ``step_fn(tokens [N] int32, cache, step int32) -> (logits [N, V], cache)``
with ``N = batch_size * beam_size`` rows laid out batch-major (row ``b * beam_size + k``). After
every step all cache leaves are reordered with a gather along axis 0 so that row ``i`` follows
the hypothesis it now holds. Leaves that are identical within a sentence (e.g. encoder
cross-attention K/V expanded to beams) are unaffected by this in-sentence reorder, so the whole
cache can be passed as is.

Algorithm (fairseq ``SequenceGenerator``): every step scores the ``K * V`` continuations of the
``K`` alive hypotheses, keeps the top ``2K``; EOS continuations ranked within the first ``K``
become finished hypotheses (at most ``K`` per sentence), the first ``K`` non-EOS continuations
stay alive. Step 0 feeds ``decoder_start_id`` and expands beam 0 only.

* Score of a finished hypothesis: ``sum_logprobs / length ** length_penalty`` where ``length``
  is the number of generated tokens, decoder start excluded, EOS and forced prefix tokens
  included (fairseq's ``(step + 1) ** lenpen``). With ``count_prefix=False`` the (non-pad)
  prefix tokens are subtracted from ``length``.
* Forced prefix: at step ``t < P`` the only allowed token is ``prefix[:, t]`` (a ``pad_id``
  entry means "no constraint", which allows per-sentence prefix lengths with trailing padding);
  its model log-prob is added to the score (fairseq ``prefix_tokens``). EOS is therefore
  impossible before the prefix is complete.
* ``max_len[b]`` is the maximum number of generated tokens, EOS and prefix included; it is
  clipped to ``[n_prefix_b + 1, max_steps]``. At the last allowed step only EOS is allowed
  (fairseq forces EOS with its model log-prob). ``pad_id`` is never generated (fairseq).
* ``early_stopping=True``: a sentence is done once it has ``K`` finished hypotheses (fairseq),
  or when no alive hypothesis is left.

Relation to Hugging Face ``generate(num_beams=K, length_penalty=lp, early_stopping=...)``
(``transformers/generation/utils.py::_beam_search``, v5): HF scores a finished hypothesis as
``sum_logprobs / (cur_len + 1 - decoder_prompt_len) ** lp`` where ``decoder_prompt_len`` is the
length of the decoder prompt (``[decoder_start]`` for encoder-decoder models), i.e. the same
``length`` as fairseq: generated tokens including EOS, excluding decoder start. Hence the
length penalty maps one to one (the HF-equivalent of fairseq ``lenpen=x`` is ``length_penalty=x``);
no conversion function is needed. The differences are elsewhere:

1. ``early_stopping``: HF's default is ``False``: after ``K`` hypotheses are finished, HF keeps
   searching (and lets better finished hypotheses replace worse ones) until
   ``best_alive_logprob / cur_gen_len ** lp <= worst_finished_score``; ``"never"`` uses
   ``max_new_tokens`` as the hypothetical length when ``lp > 0``. HF ``early_stopping=True``
   is fairseq's rule. All three values are accepted here with HF's meaning.
2. Max length: HF does not force EOS; hypotheses reaching ``max_length`` are finished as they
   are (no EOS, the last token is the best one) via ``MaxLengthCriteria``.
3. Forced tokens: HF's ``forced_bos_token_id`` sets the forced token's log-prob to 0 (it
   still counts in the length); a prefix passed as ``decoder_input_ids`` is part of the prompt:
   not scored, not counted in the length, and ``max_new_tokens`` counts after it.
4. When more EOS hypotheses arrive than free slots, HF merges and keeps the best ``K`` by score
   (old finished hypotheses can be displaced), fairseq keeps the first ones. Only the order of
   ``n_best > 1`` lists can differ; the best hypothesis is the same.
5. HF does not mask ``pad_id``.

``hf_compat=True`` reproduces HF's bookkeeping exactly (points 2-5: forced prefix log-prob 0,
no forced EOS at ``max_len``, merge of finished hypotheses, no pad mask). Mapping for parity:
``generate(num_beams=K, max_new_tokens=m, early_stopping=e, length_penalty=lp)`` equals
``beam_search(..., hf_compat=True, early_stopping=e, length_penalty=lp, max_len=m)``;
with ``forced_bos_token_id=x`` add ``prefix=[[x]]``; with
``decoder_input_ids=[start, *p]`` use ``prefix=p, count_prefix=False, max_len=len(p) + m``.
HF's "canonical" setting (``early_stopping="never"``, ``length_penalty=0``) is also available.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

StepFn = Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]]


class BeamOutput(NamedTuple):
    """Finished hypotheses, best first.

    ``tokens [B, n_best, max_steps]``: generated tokens (no decoder start; prefix and EOS
    included), ``pad_id`` after the end. ``scores [B, n_best]``: length-normalised scores
    (``-inf`` for an empty slot). ``lengths [B, n_best]``: number of generated tokens.
    """

    tokens: jax.Array
    scores: jax.Array
    lengths: jax.Array


def beam_search(
    step_fn: StepFn,
    cache: Any,
    *,
    batch_size: int,
    beam_size: int,
    max_len: int | jax.Array,
    decoder_start_id: int,
    eos_id: int,
    pad_id: int,
    prefix: jax.Array | None = None,
    length_penalty: float = 1.0,
    n_best: int = 1,
    max_steps: int,
    early_stopping: bool | str = True,
    hf_compat: bool = False,
    count_prefix: bool = True,
) -> BeamOutput:
    """Beam search over ``step_fn``; see the module docstring for the exact semantics.

    ``cache`` leaves must have leading axis ``batch_size * beam_size`` (batch-major).
    ``max_len`` is an int or a ``[batch_size]`` array; ``prefix`` is ``[batch_size, P]``
    (``P`` may be 0). ``length_penalty`` is traced (no recompilation when it changes);
    ``step_fn`` and the integer/flag options are static: pass the same ``step_fn`` object to
    reuse the compiled search, or call this function inside your own ``jax.jit`` with the model
    parameters as arguments when ``step_fn`` is a fresh closure.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got {n_best}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    max_len = jnp.broadcast_to(jnp.asarray(max_len, jnp.int32), (batch_size,))
    if prefix is None:
        prefix = jnp.zeros((batch_size, 0), jnp.int32)
    prefix = jnp.asarray(prefix, jnp.int32)
    if prefix.shape[0] != batch_size:
        raise ValueError(f"prefix has {prefix.shape[0]} rows, batch_size is {batch_size}")
    return _beam_search(
        step_fn, cache, max_len, prefix, jnp.asarray(length_penalty, jnp.float32),
        batch_size=batch_size, beam_size=beam_size, max_steps=max_steps,
        decoder_start_id=decoder_start_id, eos_id=eos_id, pad_id=pad_id, n_best=n_best,
        early_stopping=early_stopping, hf_compat=hf_compat, count_prefix=count_prefix,
    )


def greedy_search(
    step_fn: StepFn,
    cache: Any,
    *,
    batch_size: int,
    max_len: int | jax.Array,
    decoder_start_id: int,
    eos_id: int,
    pad_id: int,
    prefix: jax.Array | None = None,
    length_penalty: float = 1.0,
    max_steps: int,
    hf_compat: bool = False,
) -> BeamOutput:
    """Greedy decoding: :func:`beam_search` with ``beam_size=1`` (``cache`` has ``batch_size`` rows)."""
    return beam_search(
        step_fn, cache, batch_size=batch_size, beam_size=1, max_len=max_len,
        decoder_start_id=decoder_start_id, eos_id=eos_id, pad_id=pad_id, prefix=prefix,
        length_penalty=length_penalty, n_best=1, max_steps=max_steps, hf_compat=hf_compat,
    )


def strip_and_decode_ids(out: BeamOutput, eos_id: int, pad_id: int) -> list[list[int]]:
    """Best hypothesis per sentence as Python ids, cut at the first EOS, pads removed."""
    result = []
    for row in np.asarray(out.tokens[:, 0]).tolist():
        if eos_id in row:
            row = row[: row.index(eos_id)]
        result.append([t for t in row if t != pad_id])
    return result


def _top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """`lax.top_k` behind an optimization barrier: when its outputs are sliced more than once, XLA:CPU
    otherwise lowers it to a full sort of the K·V candidates (~15x slower for a 10k vocabulary)."""
    return jax.lax.optimization_barrier(jax.lax.top_k(x, k))


def _take(x: jax.Array, idx: jax.Array) -> jax.Array:
    """Gather ``x[b, idx[b, j], ...]``."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


class _State(NamedTuple):
    t: jax.Array
    cache: Any
    alive_seq: jax.Array  # [B, K, T + 1], position 0 holds decoder start
    alive_lp: jax.Array  # [B, K] cumulative log-probs, -inf for an empty beam
    fin_seq: jax.Array  # [B, K, T + 1]
    fin_score: jax.Array  # [B, K] normalised scores, sorted, -inf for an empty slot
    fin_len: jax.Array  # [B, K]
    done: jax.Array  # [B]


@functools.partial(
    jax.jit,
    static_argnames=(
        "step_fn", "batch_size", "beam_size", "max_steps", "decoder_start_id", "eos_id",
        "pad_id", "n_best", "early_stopping", "hf_compat", "count_prefix",
    ),
)
def _beam_search(step_fn, cache, max_len, prefix, length_penalty, *, batch_size, beam_size,
                 max_steps, decoder_start_id, eos_id, pad_id, n_best, early_stopping,
                 hf_compat, count_prefix):
    B, K, T, P = batch_size, beam_size, max_steps, prefix.shape[1]
    neg = jnp.float32(-jnp.inf)
    n_prefix = jnp.sum(prefix != pad_id, axis=1).astype(jnp.int32)
    max_len = jnp.clip(max_len, n_prefix + 1, T)
    offset = jnp.zeros_like(n_prefix) if count_prefix else n_prefix
    rank = jnp.arange(2 * K)
    positions = jnp.arange(T + 1)
    cap_finished = early_stopping is True and not hf_compat

    def body(s: _State) -> _State:
        t = s.t
        logits, cache = step_fn(s.alive_seq[:, :, t].reshape(B * K), s.cache, t)
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        V = lp.shape[-1]
        lp = lp.reshape(B, K, V)
        vocab = jnp.arange(V)
        gen = t + 1
        at_max = gen >= max_len
        if not hf_compat:
            if pad_id != eos_id:
                lp = jnp.where(vocab == pad_id, neg, lp)
            lp = jnp.where(at_max[:, None, None] & (vocab != eos_id), neg, lp)
        if P:
            tok = jax.lax.dynamic_index_in_dim(prefix, jnp.minimum(t, P - 1), 1, keepdims=False)
            forced = (t < P) & (tok != pad_id)
            allowed = (vocab == tok[:, None])[:, None, :]
            lp = jnp.where(forced[:, None, None], jnp.where(allowed, 0.0 if hf_compat else lp, neg), lp)

        cand_score, cand_idx = _top_k((s.alive_lp[..., None] + lp).reshape(B, K * V), 2 * K)
        cand_beam, cand_tok = cand_idx // V, cand_idx % V
        ends = cand_tok == eos_id
        if hf_compat:
            ends = ends | at_max[:, None]
        cand_seq = _take(s.alive_seq, cand_beam)
        cand_seq = jnp.where(positions == gen, cand_tok[..., None], cand_seq)

        new_fin = (ends & (cand_score > neg) & (rank < K) & ~s.done[:, None])[:, :K]
        if cap_finished:
            n_fin = jnp.sum(s.fin_score > neg, axis=1, keepdims=True)
            new_fin = new_fin & (n_fin + jnp.cumsum(new_fin, axis=1) <= K)
        length = jnp.maximum(gen - offset, 1).astype(jnp.float32)
        norm = cand_score[:, :K] / (length ** length_penalty)[:, None]
        merged_score = jnp.concatenate([s.fin_score, jnp.where(new_fin, norm, neg)], axis=1)
        fin_score, keep = jax.lax.top_k(merged_score, K)
        fin_seq = _take(jnp.concatenate([s.fin_seq, cand_seq[:, :K]], axis=1), keep)
        fin_len = _take(jnp.concatenate([s.fin_len, jnp.full((B, K), gen, jnp.int32)], axis=1), keep)

        _, sel = jax.lax.top_k(-jnp.where(ends, rank + 2 * K, rank), K)
        alive_lp = jnp.where(_take(ends, sel), neg, _take(cand_score, sel))
        alive_seq = _take(cand_seq, sel)
        src = (_take(cand_beam, sel) + jnp.arange(B)[:, None] * K).reshape(B * K)
        cache = jax.tree.map(lambda x: x[src], cache)

        full = jnp.all(fin_score > neg, axis=1)
        if early_stopping is True:
            stop = full
        else:
            hyp_len = gen - offset
            if early_stopping == "never":
                hyp_len = jnp.where(length_penalty > 0, max_len - offset, hyp_len)
            best = alive_lp[:, 0] / jnp.maximum(hyp_len, 1).astype(jnp.float32) ** length_penalty
            stop = full & (best <= fin_score[:, -1])
        done = s.done | stop | jnp.all(alive_lp == neg, axis=1)
        return _State(t + 1, cache, alive_seq, alive_lp, fin_seq, fin_score, fin_len, done)

    seq0 = jnp.full((B, K, T + 1), pad_id, jnp.int32).at[:, :, 0].set(decoder_start_id)
    init = _State(
        t=jnp.int32(0),
        cache=cache,
        alive_seq=seq0,
        alive_lp=jnp.tile(jnp.where(jnp.arange(K) == 0, 0.0, neg), (B, 1)),
        fin_seq=jnp.full((B, K, T + 1), pad_id, jnp.int32),
        fin_score=jnp.full((B, K), neg),
        fin_len=jnp.zeros((B, K), jnp.int32),
        done=jnp.zeros((B,), bool),
    )
    s = jax.lax.while_loop(lambda s: (s.t < T) & ~jnp.all(s.done), body, init)
    return BeamOutput(s.fin_seq[:, :n_best, 1:], s.fin_score[:, :n_best], s.fin_len[:, :n_best])
