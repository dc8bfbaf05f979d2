"""The training loop: `train_and_evaluate(config, workdir)`, checkpoint averaging and test-set evaluation.

Workdir layout: `checkpoints/<step>/` (Orbax; see `checkpoint.py`), `vocab/spm.model` (when the config names
no vocabulary), `metrics.jsonl` and `tb/` (see `metrics.py`), `config.json`.

Optional config fields beyond `base_config()`: `data.frame_buckets`, `data.token_buckets` (pipeline
buckets), `eval.batch_size` (rows per eval batch), `eval.max_examples` (per language; 0 = all),
`train.peak_flops` (summed peak FLOP/s of the devices, for the MFU estimate) and `train.progress`.
"""
from __future__ import annotations

import json
import logging
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
from mlst_jax.train import config as cfglib
from mlst_jax.train import sharding as shd
from mlst_jax.train.checkpoint import Checkpointer, save_on_preemption
from mlst_jax.train.metrics import MetricsWriter, check_finite, step_flops
from mlst_jax.train.optim import make_optimizer
from mlst_jax.train.state import abstract_train_state, create_train_state, shardings_of
from mlst_jax.train.step import make_eval_step, make_train_step

__all__ = ["train_and_evaluate", "average_checkpoints", "evaluate", "data_sources", "load_vocab"]

logger = logging.getLogger(__name__)

TRAIN_KEYS = ("features", "feature_lengths", "decoder_input", "target", "loss_weights", "valid")


# -- data ------------------------------------------------------------------------------------------------


def _builder_configs(c) -> tuple[str, Path, dict[str, str]]:
    """(dataset, manual dir, {lang: TFDS builder config})."""
    dataset, manual, src = c.data.dataset, Path(c.data.manual_dir), c.data.src_lang
    if dataset == "synthetic":
        dataset, manual = "mustc", manual / "mustc" if (manual / "mustc").is_dir() else manual
    pattern = {"mustc": "{s}-{t}", "covost2": "{s}_{t}", "europarl_st": "{s}-{t}"}.get(dataset)
    if pattern is None:
        raise ValueError(f"data.dataset={c.data.dataset!r} is not mustc, covost2, europarl_st or synthetic")
    return dataset, manual, {t: pattern.format(s=src, t=t) for t in c.data.tgt_langs}


def data_sources(c, split: str) -> dict[str, Any]:
    """`{lang: data source}` of `split` (a corpus split name) for every target language, building the TFDS
    ArrayRecords into `data.data_dir` first when they are missing."""
    from mlst_jax.data.tfds_builders import BUILDERS, prepare, tfds_split_name

    dataset, manual, configs = _builder_configs(c)
    sources = {}
    for lang, name in configs.items():
        builder = BUILDERS[dataset](config=name, data_dir=c.data.data_dir)
        if not builder.is_prepared():
            logger.info("preparing %s %s into %s", dataset, name, c.data.data_dir)
            prepare(dataset, manual, c.data.data_dir, name)
            builder = BUILDERS[dataset](config=name, data_dir=c.data.data_dir)
        sources[lang] = builder.as_data_source(tfds_split_name(split))
    return sources


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def load_vocab(c, workdir: str | Path, sources: dict[str, Any] | None = None) -> Vocab:
    """The vocabulary `data.vocab` names (a SentencePiece model / prefix or an HF tokenizer dir), or the one
    trained into `<workdir>/vocab/spm` on the training targets (trained on first use)."""
    if c.data.vocab:
        path = Path(c.data.vocab)
        if path.is_dir():
            return Vocab.from_hf_dir(path)
        return Vocab.from_spm(path if path.suffix == ".model" else f"{path}.model")
    prefix = Path(workdir) / "vocab" / "spm"
    if Path(f"{prefix}.model").is_file():
        return Vocab.from_spm(f"{prefix}.model")
    if jax.process_index() != 0:
        raise ValueError(f"{prefix}.model is missing: train the vocabulary on process 0 first (or set data.vocab)")
    sources = sources or data_sources(c, c.data.train_split)
    texts = [_text(src[i]["tgt_text"]) for src in sources.values() for i in range(len(src))]
    prefix.parent.mkdir(parents=True, exist_ok=True)
    return train_vocab(texts, prefix, c.model.vocab_size, list(c.data.tgt_langs))


def _pipeline_config(c, train: bool) -> pl.PipelineConfig:
    extra = {k: tuple(c.data[k]) for k in ("frame_buckets", "token_buckets") if k in c.data}
    if "token_buckets" in extra:
        extra["max_tokens"] = extra["token_buckets"][-1]
    return pl.PipelineConfig(max_frames=c.data.max_frames, max_frames_per_batch=c.data.max_frames_per_batch,
                             langs=tuple(c.data.tgt_langs), temperature=c.data.temperature,
                             specaugment=(c.data.specaugment or None) if train else None,
                             cmvn=c.data.cmvn or None, seed=c.seed, **extra)


def _eval_batch_size(c, n_devices: int) -> int:
    b = c.eval.get("batch_size", 0) or max(1, c.data.max_frames_per_batch // c.data.max_frames)
    return max(n_devices, -(-b // n_devices) * n_devices)


def _rows_multiple(c, n_batch_devices: int) -> int:
    """Rows per batch (per process) must split evenly over this process's batch devices within each
    language group of a stratified [G, b] batch, so b (not only G·b) is a multiple of the device count."""
    local = max(1, n_batch_devices // jax.process_count())
    return local * len(c.data.tgt_langs)


def _put(batch, sharding, keys=TRAIN_KEYS):
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys if k in batch}


# -- evaluation ------------------------------------------------------------------------------------------


class _Evaluator:
    """Dev loss (teacher forced) and beam-search BLEU per language for given parameters."""

    def __init__(self, c, vocab, model_cfg, sources, mesh, param_shardings):
        self.c, self.vocab, self.model_cfg, self.sources = c, vocab, model_cfg, sources
        n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
        self.batch_size = _eval_batch_size(c, n_dev // jax.process_count() or 1)
        self.pcfg = _pipeline_config(c, train=False)
        self.meta = {lang: pl.scan_source(src, vocab, lang) for lang, src in sources.items()}
        self.sharding = shd.batch_sharding(mesh, 1)
        self.eval_step = None
        if param_shardings is not None:
            self.eval_step = make_eval_step(S2TTransformer(model_cfg), mesh=mesh, param_shardings=param_shardings,
                                            batch_shardings=self.sharding)

    def __call__(self, params, with_loss: bool = True) -> dict[str, float]:
        from mlst_jax.translator import Translator

        translator = Translator(self.model_cfg, jax.device_get(params), self.vocab)  # beam search: one device
        e, limit = self.c.eval, self.c.eval.get("max_examples", 0)
        out, pairs, total = {}, {}, np.zeros(2)
        for lang, src in self.sources.items():
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
                    continue
                ids = translator.generate(batch["features"][rows], batch["feature_lengths"][rows], lang,
                                          beam_size=e.beam, length_penalty=e.lenpen, max_len_a=e.max_len_a,
                                          max_len_b=e.max_len_b)
                hyps += [self.vocab.decode(h) for h in ids]
                refs += [_text(src[int(i)]["tgt_text"]) for i in batch["index"][rows]]
            pipe.close()
            pairs[lang] = (hyps, refs)
            if with_loss and self.eval_step is not None:
                out[f"nll_{lang}"] = float(sums[0] / max(sums[1], 1.0))
                total += sums
        if with_loss and self.eval_step is not None:
            out["nll"] = float(total[0] / max(total[1], 1.0))
        scores = score_by_language(pairs)
        out.update({f"bleu_{k}": v["bleu"] for k, v in scores.items()})
        return out


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
                                      num_devices=_rows_multiple(c, n_batch_devices))
    example = _batch_structs(pipeline.batch_shapes()[0])

    # -- model ------------------------------------------------------------------------------------------
    model_cfg = cfglib.model_config(c)
    model = S2TTransformer(model_cfg)
    tx = make_optimizer({**c.optim.to_dict(), "max_updates": c.train.max_updates})
    rng = jax.random.PRNGKey(c.seed)

    # -- shard / checkpoint -----------------------------------------------------------------------------
    ckpt = Checkpointer(workdir / "checkpoints", keep=c.train.keep_checkpoints)
    target = abstract_train_state(model, tx, rng, example, mesh)
    restored = ckpt.restore_latest(target)
    if restored is None:
        state = create_train_state(model, tx, rng, example, mesh)
    else:
        state = restored.state
        if restored.data_state is not None:
            pipeline.set_state(restored.data_state)
        logger.info("resumed from step %d", restored.step)
    shardings = shardings_of(target)
    start = int(jax.device_get(state.step))
    last_saved = restored.step if restored is not None else None

    # -- step -------------------------------------------------------------------------------------------
    batch_sharding = shd.batch_sharding(mesh, 2, stratified=True)
    train_step = make_train_step(model, tx, label_smoothing=c.optim.label_smoothing, mesh=mesh,
                                 state_shardings=shardings, batch_shardings=batch_sharding)

    # -- eval -------------------------------------------------------------------------------------------
    evaluator = _Evaluator(c, vocab, model_cfg, data_sources(c, c.data.eval_split), mesh, shardings.params)

    # -- loop -------------------------------------------------------------------------------------------
    flops = None
    if c.train.get("peak_flops", 0):
        batch_structs = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding)
                         for k, s in _batch_structs(pipeline.batch_shapes()[0]).items()}
        flops = step_flops(train_step, target, batch_structs)
    writer = MetricsWriter(workdir, total_steps=c.train.max_updates, initial_step=start,
                           peak_flops=c.train.get("peak_flops", 0) or None, flops_per_step=flops,
                           progress=c.train.get("progress", True), enabled=jax.process_index() == 0)
    preempt = save_on_preemption() if threading.current_thread() is threading.main_thread() else None
    results: dict[str, float] = {}
    step, last_eval = start, None

    def save():
        nonlocal last_saved
        ckpt.save(state, data_state=pipeline.get_state(), config=c)
        last_saved = step

    try:
        while step < c.train.max_updates:
            batch = next(pipeline)
            state, metrics = train_step(state, _put(batch, batch_sharding))
            step += 1
            if step % c.train.log_every == 0 or step == c.train.max_updates:
                metrics = jax.device_get(metrics)
                check_finite(step, metrics["loss"], last_saved)
                metrics["frames"] = int(np.asarray(batch["feature_lengths"]).sum()) * jax.process_count()
                results.update({f"train/{k}": v for k, v in writer.write(step, metrics).items()})
            if step % c.train.checkpoint_every == 0 or step == c.train.max_updates:
                save()
            if step % c.train.eval_every == 0 or step == c.train.max_updates:
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
    if last_eval is None:
        logger.info("no evaluation ran (already at step %d)", step)
    return results


def _batch_structs(shape: pl.BatchShape) -> dict[str, jax.ShapeDtypeStruct]:
    lead = shape.tokens[:-1]
    return {"features": jax.ShapeDtypeStruct(shape.features, jnp.float32),
            "feature_lengths": jax.ShapeDtypeStruct(lead, jnp.int32),
            "decoder_input": jax.ShapeDtypeStruct(shape.tokens, jnp.int32),
            "target": jax.ShapeDtypeStruct(shape.tokens, jnp.int32),
            "loss_weights": jax.ShapeDtypeStruct(shape.tokens, jnp.float32),
            "valid": jax.ShapeDtypeStruct(lead, jnp.int32)}


# -- after training --------------------------------------------------------------------------------------


def average_checkpoints(workdir: str | Path, last_n: int) -> Any:
    """The element-wise mean (float32) of the parameters of the last `last_n` checkpoints in `workdir`
    (fewer if fewer were kept), as host numpy arrays."""
    ckpt = Checkpointer(Path(workdir) / "checkpoints", keep=None, async_save=False)
    steps = ckpt.all_steps()[-max(1, last_n):]
    if not steps:
        raise ValueError(f"no checkpoints in {Path(workdir) / 'checkpoints'}")
    total = None
    for s in steps:
        p = jax.tree.map(lambda x: np.asarray(x, np.float64), ckpt.restore_params(s))
        total = p if total is None else jax.tree.map(np.add, total, p)
    ckpt.close()
    logger.info("averaged steps %s", steps)
    return jax.tree.map(lambda x: (x / len(steps)).astype(np.float32), total)


def evaluate(config: ml_collections.ConfigDict, workdir: str | Path, split: str | None = None) -> dict[str, float]:
    """Beam-search BLEU per target language and their mean (`avg`) on `split` (default `data.test_split`)
    with the average of the last `train.average_last` checkpoints and the workdir's vocabulary."""
    c = ml_collections.ConfigDict(config.to_dict())
    vocab = load_vocab(c, workdir)
    c.model.vocab_size = len(vocab)
    params = average_checkpoints(workdir, c.train.average_last)
    mesh = shd.make_mesh(*cfglib.resolve_mesh(c, jax.device_count()))
    ev = _Evaluator(c, vocab, cfglib.model_config(c), data_sources(c, split or c.data.test_split), mesh, None)
    return {k[len("bleu_"):]: v for k, v in ev(params, with_loss=False).items() if k.startswith("bleu_")}
