"""Evaluation of any task's parameters on a split: dev loss (teacher forced, on the mesh) and beam-search BLEU per
stream with the target language's sacreBLEU tokenizer.

Multi-process runs: every process decodes its rows of each batch and the hypotheses are gathered, so every process
reports the same BLEU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from mlst_jax.data import pipeline as pl
from mlst_jax.evaluate import corpus_bleu
from mlst_jax.train import distributed, inputs
from mlst_jax.train import sharding as shd
from mlst_jax.train.step import make_eval_step
from mlst_jax.train.tasks import Task


def put(batch, sharding, keys):
    """Global arrays of `keys` from this process's rows; `sharding` is one sharding or one per key."""
    def one(k):
        return sharding[k] if isinstance(sharding, dict) else sharding
    return {k: jax.make_array_from_process_local_data(one(k), np.asarray(batch[k])) for k in keys if k in batch}


class Evaluator:
    """Dev loss and BLEU per stream of `split` for given parameters (`__call__`)."""

    def __init__(self, c, task: Task, vocab, model_cfg, split: str, mesh, param_shardings=None, plan=None):
        self.c, self.task, self.vocab, self.model_cfg = c, task, vocab, model_cfg
        self.streams = task.eval_streams(split)
        self.sources = task.sources(split, self.streams)
        self.plan = None if plan is None or plan.is_shared else plan  # language views for language-specific params
        self.param_shardings = param_shardings
        n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
        self.batch_size = task.eval_batch_size(n_dev // jax.process_count() or 1)
        self.meta = task.metadata(split, self.streams, self.sources, vocab)
        self.sharding = shd.batch_sharding(mesh, 1)
        self.keys = tuple(k for k in task.train_keys(True) if k not in ("group_lang",) and not k.startswith("ctc"))
        self.mt = "src_tokens" in self.keys  # a joint speech-text model: MT BLEU from the transcripts too
        self.eval_step = None
        if param_shardings is not None:
            self.eval_step = make_eval_step(task.model(model_cfg), mesh=mesh, param_shardings=param_shardings,
                                            batch_shardings=self.sharding, sums_fn=task.step_options().get("sums_fn"))

    def __call__(self, params, with_loss: bool = True, write_to: Path | None = None) -> dict[str, Any]:
        """`{"nll_<stream>", "nll", "bleu_<stream>", "bleu_avg"}` of `params` (a joint speech-text model adds
        `mt_bleu_<stream>` and `mt_bleu_avg`: its text path on the transcripts); with `write_to`, process 0 also
        writes `<stream>.hyp` and `<stream>.ref` there (one detokenized sentence per line, in the split's order)."""
        host = distributed.host_arrays(params)
        with_loss = with_loss and self.eval_step is not None
        e, limit = self.c.eval, self.c.eval.max_examples
        beam = dict(beam_size=e.beam, length_penalty=e.lenpen, max_len_a=e.max_len_a, max_len_b=e.max_len_b)
        out, pairs, mt_pairs, total = {}, {}, {}, np.zeros(2)
        decode = self.task.decodes
        translator = None if self.plan is not None or not decode else \
            self.task.translator(self.model_cfg, host, self.vocab)
        for stream in self.streams:
            src = self.sources[stream.name]
            stream_params = params
            if self.plan is not None:
                translator = self.task.translator(self.model_cfg, self.plan.view(host, stream.name), self.vocab)
                if with_loss:
                    stream_params = jax.device_put(self.plan.view(params, stream.name), self.param_shardings)
            pcfg = self.task.pipeline_config(train=False, langs=(stream.tgt,), targets=())
            pipe = pl.make_eval_pipeline(src, self.vocab, pcfg, self.batch_size, lang=stream.tgt,
                                         shard_index=jax.process_index(), shard_count=jax.process_count(),
                                         metadata=self.meta[stream.name])
            hyps, refs, mt_hyps, sums = [], [], [], np.zeros(2)
            for batch in pipe:
                if with_loss:
                    m = jax.device_get(self.eval_step(stream_params, put(batch, self.sharding, self.keys)))
                    sums += (m["nll_sum"], m["ntokens"])
                rows = np.flatnonzero(batch["valid"])
                if not decode or limit and len(hyps) >= limit:
                    if with_loss:
                        continue
                    break  # nothing more to score
                ids = translator.generate(batch["features"][rows], batch["feature_lengths"][rows], stream.tgt,
                                          **beam) if rows.size else []
                for i, h in self._gather(batch["index"][rows], ids):
                    hyps.append(self.vocab.decode(h))
                    refs.append(inputs.text(src[int(i)]["tgt_text"]))
                if self.mt:  # the joint model's text path, from the transcripts
                    ids = translator.generate_from_text(batch["src_tokens"][rows], stream.tgt, **beam) \
                        if rows.size else []
                    mt_hyps += [self.vocab.decode(h) for _, h in self._gather(batch["index"][rows], ids)]
            pipe.close()
            if decode:
                pairs[stream] = (hyps, refs)
            if self.mt:
                mt_pairs[stream] = (mt_hyps, refs)
            if with_loss:
                out[f"nll_{stream.name}"] = float(sums[0] / max(sums[1], 1.0))
                total += sums
        if with_loss:
            out["nll"] = float(total[0] / max(total[1], 1.0))
        for prefix, scored in (("bleu", pairs), ("mt_bleu", mt_pairs)):
            for stream, (hyps, refs) in scored.items():
                out[f"{prefix}_{stream.name}"] = corpus_bleu(hyps, refs, stream.tgt).score
            if scored:
                out[f"{prefix}_avg"] = float(np.mean([out[f"{prefix}_{s.name}"] for s in scored]))
        if write_to is not None and jax.process_index() == 0:
            write_to.mkdir(parents=True, exist_ok=True)
            for stream, (hyps, refs) in pairs.items():
                for ext, lines in (("hyp", hyps), ("ref", refs)):
                    (write_to / f"{stream.name}.{ext}").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
        return out

    def _gather(self, index: np.ndarray, ids: list[list[int]]) -> list[tuple[int, list[int]]]:
        """(example index, hypothesis ids) of this batch's rows on every process, in process order."""
        if jax.process_count() == 1:
            return list(zip(index.tolist(), ids))
        width = self.model_cfg.max_target_positions
        idx, tok = np.full(self.batch_size, -1, np.int32), np.full((self.batch_size, width), -1, np.int32)
        idx[: len(index)] = index
        for r, h in enumerate(ids):
            tok[r, : len(h)] = h
        idx, tok = distributed.allgather((idx, tok))
        return [(int(i), [t for t in row if t >= 0]) for i, row in zip(idx.reshape(-1), tok.reshape(-1, width))
                if i >= 0]
