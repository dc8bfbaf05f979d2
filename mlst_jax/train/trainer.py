"""The training loop: `train_and_evaluate(config, workdir)`, checkpoint averaging and test-set evaluation.

Workdir layout: `checkpoints/<step>/` (Orbax; see `checkpoint.py`), `vocab/spm.model` (when the config names
no vocabulary), `metrics.jsonl` and `tb/` (see `metrics.py`), `config.json`.

Optional config fields beyond `base_config()`: `data.frame_buckets` and `data.token_buckets` (pipeline
buckets; default the pipeline's). `train.eval_every <= 0` turns evaluation during training off.

Multi-process runs (see `distributed.py`): every process builds the same plan and feeds its own rows;
process 0 prepares missing TFDS data and trains the vocabulary first (then sends it to the others), and
evaluation gathers every process's hypotheses so all report the same BLEU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlst_jax.data import pipeline as pl
from mlst_jax.data.vocab import Vocab, train_vocab
from mlst_jax.evaluate import score_by_language
from mlst_jax.models.s2t_transformer import S2TTransformer
from mlst_jax.sharing import training as sharing_training
from mlst_jax.train import config as cfglib
from mlst_jax.train import distributed
from mlst_jax.train import sharding as shd
from mlst_jax.train.checkpoint import Checkpointer, save_on_preemption
from mlst_jax.train.metrics import MetricsWriter, check_finite, step_flops
from mlst_jax.train.optim import make_optimizer
from mlst_jax.train.state import abstract_params as abstract_params_of
from mlst_jax.train.state import abstract_train_state, create_train_state, shardings_of
from mlst_jax.train.step import make_eval_step, make_train_step

__all__ = ["train_and_evaluate", "average_checkpoints", "evaluate", "data_sources", "load_vocab"]

logger = logging.getLogger(__name__)

TRAIN_KEYS = ("features", "feature_lengths", "decoder_input", "target", "loss_weights", "valid")
CTC_KEYS = ("ctc_labels", "ctc_label_paddings")


def _ctc_chars(c) -> int:
    """CTC labels per training row (0: no auxiliary CTC loss)."""
    return c.data.get("ctc_max_chars", 256) if c.optim.get("ctc_weight", 0.0) > 0 else 0


def train_keys(c, shared: bool) -> tuple[str, ...]:
    """The batch keys a training step of config `c` reads (under a shared plan or not)."""
    return TRAIN_KEYS + (CTC_KEYS if _ctc_chars(c) else ()) + (() if shared else ("group_lang",))


# -- data ------------------------------------------------------------------------------------------------


def _builder_configs(c) -> tuple[str, Path, dict[str, str]]:
    """(dataset, manual dir, {lang: TFDS builder config})."""
    dataset, manual, src = c.data.dataset, Path(c.data.manual_dir), c.data.src_lang
    if dataset == "synthetic":
        dataset, manual = "mustc", manual / "mustc" if (manual / "mustc").is_dir() else manual
    pattern = {"mustc": "{s}-{t}", "covost2": "{s}_{t}", "europarl_st": "{s}-{t}"}.get(dataset)
    if pattern is None:
        raise ValueError(f"data.dataset={c.data.dataset!r} is not mustc, covost2, europarl_st or synthetic")
    suffix = ".fbank" if c.data.get("features", "audio") == "fbank" else ""
    return dataset, manual, {t: pattern.format(s=src, t=t) + suffix for t in c.data.tgt_langs}


def trainable_mask(c, params: Any) -> Any:
    """The `finetune.trainable` mask over `params` (None when everything trains)."""
    name = c.get("finetune", {}).get("trainable", "all")
    if name == "all":
        return None
    from mlst_jax.finetune.lna import trainable_mask as mask_of

    return mask_of(params, name)


def corpus_root(c) -> Path:
    """The MuST-C-layout root of the config's corpus (where multi-way aligned sets come from)."""
    dataset, manual, _ = _builder_configs(c)
    if dataset != "mustc":
        raise ValueError(f"data.dataset={c.data.dataset!r}: multi-way aligned sets need the MuST-C layout")
    return manual


def data_sources(c, split: str) -> dict[str, Any]:
    """`{lang: data source}` of `split` (a corpus split name) for every target language, building the TFDS
    ArrayRecords into `data.data_dir` first when they are missing."""
    from mlst_jax.data.tfds_builders import BUILDERS, prepare, tfds_split_name

    dataset, manual, configs = _builder_configs(c)
    first = jax.process_index() == 0
    if not first:
        distributed.barrier("mlst_data_prepared")  # process 0 prepares a shared data_dir first
    sources = {}
    for lang, name in configs.items():
        builder = BUILDERS[dataset](config=name, data_dir=c.data.data_dir)
        if not builder.is_prepared():
            logger.info("preparing %s %s into %s", dataset, name, c.data.data_dir)
            prepare(dataset, manual, c.data.data_dir, name)
            builder = BUILDERS[dataset](config=name, data_dir=c.data.data_dir)
        sources[lang] = builder.as_data_source(tfds_split_name(split))
    if first:
        distributed.barrier("mlst_data_prepared")
    return sources


def source_metadata(c, split: str, sources: dict[str, Any], vocab: Vocab) -> dict[str, pl.SourceMeta]:
    """`pl.scan_source` of every language's source, cached in `<data.data_dir>/mlst_metadata/` under the
    builder version, the split and a digest of the vocabulary (scanning reads every example: ~2.4 s per 10,000
    utterances); a cached file that does not match its source's size is scanned again."""
    from mlst_jax.data.tfds_builders import BUILDERS

    dataset, _, configs = _builder_configs(c)
    digest = hashlib.sha1(Path(vocab.spm_path).read_bytes()).hexdigest()[:12]
    root = Path(c.data.data_dir) / "mlst_metadata" / dataset / str(BUILDERS[dataset].VERSION)
    out = {}
    for lang, src in sources.items():
        path = root / f"{configs[lang]}-{split}-{digest}.npz"
        if path.is_file():
            meta = pl.SourceMeta.load(path)
            if len(meta.n_frames) == len(src):
                out[lang] = meta
                continue
        out[lang] = pl.scan_source(src, vocab, lang)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{jax.process_index()}.tmp")
        out[lang].save(tmp)
        os.replace(tmp, path)
    return out


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def load_vocab(c, workdir: str | Path, sources: dict[str, Any] | None = None) -> Vocab:
    """The vocabulary `data.vocab` names (a SentencePiece model / prefix or an HF tokenizer dir), or the one
    trained into `<workdir>/vocab/spm` on the training targets (trained on first use, by process 0, which
    sends it to the other processes)."""
    if c.data.vocab:
        path = Path(c.data.vocab)
        if path.is_dir():
            return Vocab.from_hf_dir(path)
        return Vocab.from_spm(path if path.suffix == ".model" else f"{path}.model")
    prefix = Path(workdir) / "vocab" / "spm"
    if distributed.broadcast_flag(not Path(f"{prefix}.model").is_file()):  # process 0's view decides
        if jax.process_index() == 0:
            sources = sources or data_sources(c, c.data.train_split)
            texts = [_text(src[i]["tgt_text"]) for src in sources.values() for i in range(len(src))]
            prefix.parent.mkdir(parents=True, exist_ok=True)
            train_vocab(texts, prefix, c.model.vocab_size, list(c.data.tgt_langs))
        distributed.broadcast_file(f"{prefix}.model")
    return Vocab.from_spm(f"{prefix}.model")


def _pipeline_config(c, train: bool) -> pl.PipelineConfig:
    extra = {k: tuple(c.data[k]) for k in ("frame_buckets", "token_buckets") if k in c.data}
    if "token_buckets" in extra:
        extra["max_tokens"] = extra["token_buckets"][-1]
    return pl.PipelineConfig(max_frames=c.data.max_frames, max_frames_per_batch=c.data.max_frames_per_batch,
                             langs=tuple(c.data.tgt_langs), temperature=c.data.temperature,
                             specaugment=(c.data.specaugment or None) if train else None,
                             cmvn=c.data.cmvn or None, seed=c.seed, ctc_max_chars=_ctc_chars(c), **extra)


def _eval_batch_size(c, n_devices: int) -> int:
    b = c.eval.get("batch_size", 0) or max(1, c.data.max_frames_per_batch // c.data.max_frames)
    return max(n_devices, -(-b // n_devices) * n_devices)


def _local_batch_devices(n_batch_devices: int) -> int:
    """Devices of this process along the batch axes ("data" x "fsdp")."""
    return max(1, n_batch_devices // jax.process_count())


def _put(batch, sharding, keys=TRAIN_KEYS):
    """Global arrays of `keys` from this process's rows; `sharding` is one sharding or one per key."""
    def one(k):
        return sharding[k] if isinstance(sharding, dict) else sharding
    return {k: jax.make_array_from_process_local_data(one(k), np.asarray(batch[k])) for k in keys if k in batch}


# -- evaluation ------------------------------------------------------------------------------------------


class _Evaluator:
    """Dev loss (teacher forced) and beam-search BLEU per language for given parameters."""

    def __init__(self, c, vocab, model_cfg, split, mesh, param_shardings, plan=None):
        sources = data_sources(c, split)
        self.c, self.vocab, self.model_cfg, self.sources = c, vocab, model_cfg, sources
        self.plan = None if plan is None or plan.is_shared else plan  # language views for language-specific params
        self.param_shardings = param_shardings
        n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
        self.batch_size = _eval_batch_size(c, n_dev // jax.process_count() or 1)
        self.pcfg = _pipeline_config(c, train=False)
        self.meta = source_metadata(c, split, sources, vocab)
        self.sharding = shd.batch_sharding(mesh, 1)
        self.eval_step = None
        if param_shardings is not None:
            self.eval_step = make_eval_step(S2TTransformer(model_cfg), mesh=mesh, param_shardings=param_shardings,
                                            batch_shardings=self.sharding)

    def __call__(self, params, with_loss: bool = True, write_to: Path | None = None) -> dict[str, float]:
        """Scores `params`; with `write_to`, process 0 also writes `<lang>.hyp` and `<lang>.ref` there (one
        detokenized sentence per line, in the split's order)."""
        from mlst_jax.translator import Translator

        host = distributed.host_arrays(params)
        translator = Translator(self.model_cfg, host, self.vocab)  # beam search: one device
        all_params = params
        e, limit = self.c.eval, self.c.eval.get("max_examples", 0)
        out, pairs, total = {}, {}, np.zeros(2)
        for lang, src in self.sources.items():
            if self.plan is not None:
                translator = Translator(self.model_cfg, self.plan.view(host, lang), self.vocab)
                if with_loss and self.eval_step is not None:
                    params = jax.device_put(self.plan.view(all_params, lang), self.param_shardings)
            pipe = pl.make_eval_pipeline(src, self.vocab, self.pcfg, self.batch_size, lang=lang,
                                         shard_index=jax.process_index(), shard_count=jax.process_count(),
                                         metadata=self.meta[lang])
            hyps, refs, sums = [], [], np.zeros(2)
            for batch in pipe:
                if with_loss and self.eval_step is not None:
                    m = jax.device_get(self.eval_step(params, _put(batch, self.sharding)))
                    sums += (m["nll_sum"], m["ntokens"])
                rows = np.flatnonzero(batch["valid"])
                if limit and len(hyps) >= limit:
                    if with_loss and self.eval_step is not None:
                        continue
                    break  # nothing more to score
                ids = translator.generate(batch["features"][rows], batch["feature_lengths"][rows], lang,
                                          beam_size=e.beam, length_penalty=e.lenpen, max_len_a=e.max_len_a,
                                          max_len_b=e.max_len_b) if rows.size else []
                for i, h in self._gather(batch["index"][rows], ids):
                    hyps.append(self.vocab.decode(h))
                    refs.append(_text(src[int(i)]["tgt_text"]))
            pipe.close()
            pairs[lang] = (hyps, refs)
            if with_loss and self.eval_step is not None:
                out[f"nll_{lang}"] = float(sums[0] / max(sums[1], 1.0))
                total += sums
        if with_loss and self.eval_step is not None:
            out["nll"] = float(total[0] / max(total[1], 1.0))
        scores = score_by_language(pairs)
        out.update({f"bleu_{k}": v["bleu"] for k, v in scores.items()})
        if write_to is not None and jax.process_index() == 0:
            write_to.mkdir(parents=True, exist_ok=True)
            for lang, (hyps, refs) in pairs.items():
                for ext, lines in (("hyp", hyps), ("ref", refs)):
                    (write_to / f"{lang}.{ext}").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
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


# -- training --------------------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming exactly from its latest checkpoint) and returns the last
    train metrics and the final dev evaluation (`eval/nll`, `eval/bleu_<lang>`, `eval/bleu_avg`)."""
    c = ml_collections.ConfigDict(config.to_dict())
    workdir = Path(workdir)
    cfglib.validate(c, jax.device_count())
    workdir.mkdir(parents=True, exist_ok=True)

    # -- mesh -------------------------------------------------------------------------------------------
    mesh = shd.make_mesh(*cfglib.resolve_mesh(c, jax.device_count()))
    n_batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]

    # -- input ------------------------------------------------------------------------------------------
    train_sources = data_sources(c, c.data.train_split)
    vocab = load_vocab(c, workdir, train_sources)
    if len(vocab) != c.model.vocab_size:
        logger.warning("model.vocab_size=%d but the vocabulary has %d pieces; using %d", c.model.vocab_size,
                       len(vocab), len(vocab))
        c.model.vocab_size = len(vocab)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(c.to_json_best_effort(indent=1))
    pipeline = pl.make_train_pipeline(train_sources, vocab, _pipeline_config(c, train=True),
                                      shard_index=jax.process_index(), shard_count=jax.process_count(),
                                      num_devices=_local_batch_devices(n_batch_devices),
                                      metadata=source_metadata(c, c.data.train_split, train_sources, vocab))
    example = _batch_structs(pipeline.batch_shapes()[0])

    # -- model ------------------------------------------------------------------------------------------
    model_cfg = cfglib.model_config(c)
    model = S2TTransformer(model_cfg)
    base = abstract_params_of(model, example)
    tx = make_optimizer({**c.optim.to_dict(), "max_updates": c.train.max_updates}, trainable_mask(c, base))
    rng = jax.random.PRNGKey(c.seed)

    # -- sharing plan / shard / checkpoint --------------------------------------------------------------
    ckpt = Checkpointer(workdir / "checkpoints", keep=c.train.keep_checkpoints)
    latest, init_state, init_data = ckpt.latest_step(), None, None
    if latest is not None:
        plan = sharing_training.saved_plan(ckpt, latest, base, c.data.tgt_langs)
    else:
        plan, init_state, init_data = sharing_training.start_plan_and_state(c, model, tx, rng, example, mesh, base,
                                                                            vocab, workdir)
    logger.info("sharing plan: %s, %.2fM parameters", plan, plan.num_params(base) / 1e6)
    target = abstract_train_state(model, tx, rng, example, mesh, plan)
    restored = ckpt.restore_latest(target)
    if restored is None:
        state = init_state if init_state is not None else create_train_state(model, tx, rng, example, mesh,
                                                                             plan=plan)
        if init_data is not None:
            try:
                pipeline.set_state(init_data)
            except (ValueError, KeyError) as e:
                logger.warning("data position of sharing.init not restored (%s); starting the stream afresh", e)
    else:
        state = restored.state
        if restored.data_state is not None:
            pipeline.set_state(restored.data_state)
        logger.info("resumed from step %d", restored.step)
    shardings = shardings_of(target)
    start = int(jax.device_get(state.step))
    last_saved = restored.step if restored is not None else None

    # -- step -------------------------------------------------------------------------------------------
    def step_for(plan):
        keys = train_keys(c, plan.is_shared)
        batch_sharding = shd.stratified_batch_shardings(mesh, keys)
        return keys, batch_sharding, make_train_step(model, tx, label_smoothing=c.optim.label_smoothing, mesh=mesh,
                                                     state_shardings=shardings, batch_shardings=batch_sharding,
                                                     plan=None if plan.is_shared else plan,
                                                     ctc_weight=c.optim.get("ctc_weight", 0.0))
    keys, batch_sharding, train_step = step_for(plan)
    schedule = sharing_training.IterativeSchedule.from_config(c)

    # -- eval -------------------------------------------------------------------------------------------
    evaluator = None
    if c.train.eval_every > 0:
        evaluator = _Evaluator(c, vocab, model_cfg, c.data.eval_split, mesh,
                               shd.param_shardings(base, mesh), plan)

    # -- loop -------------------------------------------------------------------------------------------
    flops = None
    if c.train.get("peak_flops", 0):
        from mlst_jax.train.aot import global_batch_shape

        shape = global_batch_shape(pipeline.batch_shapes()[0])
        batch_structs = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding[k])
                         for k, s in _batch_structs(shape, plan.is_shared, _ctc_chars(c)).items()}
        flops = step_flops(train_step, target, batch_structs)
        flops = flops * mesh.devices.size if flops else None  # XLA counts one device's share
    writer = MetricsWriter(workdir, total_steps=c.train.max_updates, initial_step=start,
                           peak_flops=c.train.get("peak_flops", 0) or None, flops_per_step=flops,
                           progress=c.train.get("progress", True), enabled=jax.process_index() == 0)
    preempt = save_on_preemption() if threading.current_thread() is threading.main_thread() else None
    results: dict[str, float] = {}
    step, last_eval = start, None

    def save():
        nonlocal last_saved
        if not bool(jax.device_get(_all_finite(state.params))):  # never let a diverged step replace a good one
            where = "none was saved" if last_saved is None else f"step {last_saved}"
            raise FloatingPointError(f"parameters are not finite at step {step}; the last good checkpoint is {where}")
        ckpt.save(state, data_state=pipeline.get_state(), config=c, sharing_plan=plan.to_json())
        last_saved = step

    try:
        while step < c.train.max_updates:
            batch = next(pipeline)
            state, metrics = train_step(state, _put(batch, batch_sharding, keys))
            step += 1
            if step % c.train.log_every == 0 or step == c.train.max_updates:
                metrics = jax.device_get(metrics)
                check_finite(step, metrics["loss"], last_saved)
                metrics["frames"] = int(np.asarray(batch["feature_lengths"]).sum()) * jax.process_count()
                results.update({f"train/{k}": v for k, v in writer.write(step, metrics).items()})
            if schedule is not None and schedule.due(step) and step < c.train.max_updates:
                new_plan = schedule.next_plan(step, plan, base, lambda: sharing_training.gradient_similarities(
                    c, model, state.params, plan, vocab, out_dir=workdir / "analysis" / f"step_{step}"))
                if new_plan != plan:
                    target = abstract_train_state(model, tx, rng, example, mesh, new_plan)
                    shardings = shardings_of(target)
                    state = jax.device_put(state.replace(
                        params=new_plan.transfer(state.params, plan),
                        opt_state=new_plan.transfer_opt_state(state.opt_state, plan, state.params)), shardings)
                    plan = new_plan
                    keys, batch_sharding, train_step = step_for(plan)
                    if evaluator is not None:
                        evaluator.plan = None if plan.is_shared else plan
                    logger.info("step %d: differentiated to %s, %.2fM parameters", step, plan,
                                plan.num_params(base) / 1e6)
                    save()
            if step % c.train.checkpoint_every == 0 or step == c.train.max_updates:
                save()
            if evaluator is not None and (step % c.train.eval_every == 0 or step == c.train.max_updates):
                t0 = time.perf_counter()
                ev = evaluator(state.params)
                ev["seconds"] = time.perf_counter() - t0
                results.update({f"eval/{k}": v for k, v in writer.write(step, ev, prefix="eval").items()})
                last_eval = step
                logger.info("step %d eval: %s", step, json.dumps({k: round(v, 3) for k, v in ev.items()}))
            if preempt is not None and preempt.requested:
                logger.warning("preemption requested: saving step %d and stopping", step)
                if last_saved != step:
                    save()
                break
    finally:
        if preempt is not None:
            preempt.restore_handlers()
        ckpt.close()
        writer.close()
        pipeline.close()
    results["step"] = step
    results["preempted"] = bool(preempt is not None and preempt.requested)
    if last_eval is None:
        logger.info("no evaluation ran (already at step %d)", step)
    return results


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def _batch_structs(shape: pl.BatchShape, shared: bool = True, ctc_chars: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
    lead = shape.tokens[:-1]
    extra = {} if shared else {"group_lang": jax.ShapeDtypeStruct(lead[:1], jnp.int32)}
    if ctc_chars:
        extra.update(ctc_labels=jax.ShapeDtypeStruct((*lead, ctc_chars), jnp.int32),
                     ctc_label_paddings=jax.ShapeDtypeStruct((*lead, ctc_chars), jnp.float32))
    return {**extra, "features": jax.ShapeDtypeStruct(shape.features, jnp.float32),
            "feature_lengths": jax.ShapeDtypeStruct(lead, jnp.int32),
            "decoder_input": jax.ShapeDtypeStruct(shape.tokens, jnp.int32),
            "target": jax.ShapeDtypeStruct(shape.tokens, jnp.int32),
            "loss_weights": jax.ShapeDtypeStruct(shape.tokens, jnp.float32),
            "valid": jax.ShapeDtypeStruct(lead, jnp.int32)}


# -- after training --------------------------------------------------------------------------------------


def average_checkpoints(workdir: str | Path, last_n: int) -> Any:
    """The element-wise mean (float32) of the parameters of the last `last_n` checkpoints in `workdir`
    (fewer if fewer were kept, and only those saved under the latest checkpoint's sharing plan), as host
    numpy arrays in that plan's layout."""
    ckpt = Checkpointer(Path(workdir) / "checkpoints", keep=None, async_save=False)
    steps = ckpt.all_steps()[-max(1, last_n):]
    if not steps:
        raise ValueError(f"no checkpoints in {Path(workdir) / 'checkpoints'}")
    plan = ckpt.restore_json(steps[-1], "sharing_plan")
    kept = [s for s in steps if ckpt.restore_json(s, "sharing_plan") == plan]
    if len(kept) < len(steps):
        logger.info("not averaging steps %s: saved under a different sharing plan", sorted(set(steps) - set(kept)))
    total = None
    for s in kept:
        p = jax.tree.map(lambda x: np.asarray(x, np.float64), ckpt.restore_params(s))
        total = p if total is None else jax.tree.map(np.add, total, p)
    ckpt.close()
    logger.info("averaged steps %s", kept)
    return jax.tree.map(lambda x: (x / len(kept)).astype(np.float32), total)


def run_plan(workdir: str | Path, langs, params: Any):
    """The sharing plan of the latest checkpoint in `workdir`, over parameters shaped like `params`."""
    ckpt = Checkpointer(Path(workdir) / "checkpoints", keep=None, async_save=False)
    try:
        return sharing_training.plan_from_json(ckpt.restore_json(ckpt.latest_step(), "sharing_plan"), params, langs)
    finally:
        ckpt.close()


def evaluate(config: ml_collections.ConfigDict, workdir: str | Path, split: str | None = None) -> dict[str, float]:
    """Beam-search BLEU per target language and their mean (`avg`) on `split` (default `data.test_split`)
    with the average of the last `train.average_last` checkpoints and the workdir's vocabulary. The
    hypotheses and references go to `<workdir>/eval/<split>/<lang>.hyp` and `.ref`."""
    c = ml_collections.ConfigDict(config.to_dict())
    vocab = load_vocab(c, workdir)
    c.model.vocab_size = len(vocab)
    params = average_checkpoints(workdir, c.train.average_last)
    plan = run_plan(workdir, c.data.tgt_langs, params)
    mesh = shd.make_mesh(*cfglib.resolve_mesh(c, jax.device_count()))
    split = split or c.data.test_split
    ev = _Evaluator(c, vocab, cfglib.model_config(c), split, mesh, None, plan)
    scores = ev(params, with_loss=False, write_to=Path(workdir) / "eval" / split)
    return {k[len("bleu_"):]: v for k, v in scores.items() if k.startswith("bleu_")}
