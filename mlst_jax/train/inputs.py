"""The one input path of training and evaluation: a TFDS source per stream (prepared from the manual download on
first use, rebuilt when the download changed), their length metadata (cached), and the Grain pipelines over them.

Multi-process runs: process 0 prepares missing or stale TFDS data first (the others wait at a barrier); every process
builds the same plan and reads its own rows.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import jax

from mlst_jax.data import batch_shapes as shapes
from mlst_jax.data import pipeline as pl
from mlst_jax.data.multiway_pipeline import MultiwayPipeline, make_multiway_pipeline
from mlst_jax.data.tfds_builders import BUILDERS, prepared_builder, source_digest, tfds_split_name
from mlst_jax.train import distributed


@dataclasses.dataclass(frozen=True)
class Stream:
    """One training or evaluation stream: a translation direction read from one TFDS source.

    `name` identifies it in batches (`lang` / `group_lang` index the streams), metrics (`bleu_<name>`) and
    sharing plans: the target language for the one-to-many S2T model, `src-tgt` for XMEF."""

    name: str
    src: str
    tgt: str

_PAIR = {"mustc": "{s}-{t}", "covost2": "{s}_{t}", "europarl_st": "{s}-{t}"}
_COVOST_CODES = {"zh": "zh-CN", "sv": "sv-SE"}  # Common Voice's file codes of these languages


def text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def dataset_and_root(c) -> tuple[str, Path]:
    """(TFDS dataset, manual dir) of the config; `synthetic` is the MuST-C layout of `mlst data synth`."""
    dataset, manual = c.data.dataset, Path(c.data.manual_dir)
    if dataset == "synthetic":
        return "mustc", manual / "mustc" if (manual / "mustc").is_dir() else manual
    if dataset not in _PAIR:
        raise ValueError(f"data.dataset={dataset!r} is not mustc, covost2, europarl_st or synthetic")
    return dataset, manual


def builder_config(c, stream: Stream) -> str:
    """The TFDS builder config of a stream: `en-de` (MuST-C, Europarl-ST), `de_en` (CoVoST 2), `.fbank` for fbank
    stored at preparation."""
    dataset, _ = dataset_and_root(c)
    s, t = stream.src, stream.tgt
    if dataset == "covost2":
        s, t = _COVOST_CODES.get(s, s), _COVOST_CODES.get(t, t)
    return _PAIR[dataset].format(s=s, t=t) + (".fbank" if c.data.features == "fbank" else "")


def data_sources(c, streams: Sequence[Stream], split: str) -> dict[str, Any]:
    """`{stream name: data source}` of corpus split `split`, building the TFDS ArrayRecords into `data.data_dir`
    first when they are missing or no longer match their source files in `data.manual_dir` (with a warning)."""
    dataset, manual = dataset_and_root(c)
    first = jax.process_index() == 0
    if not first:
        distributed.barrier("mlst_data_prepared")  # process 0 prepares a shared data_dir first
    sources = {}
    for stream in streams:
        name = builder_config(c, stream)
        if name.split(".")[0] not in {b.name.split(".")[0] for b in BUILDERS[dataset].BUILDER_CONFIGS}:
            raise ValueError(f"stream {stream.name}: {dataset} has no direction {name.split('.')[0]}")
        builder = prepared_builder(dataset, manual, c.data.data_dir, name)
        if tfds_split_name(split) not in builder.info.splits:
            raise ValueError(f"stream {stream.name}: {dataset} {name} has no split {split!r} (it has "
                             f"{', '.join(builder.corpus_splits())}) under data.manual_dir={str(manual)!r}")
        sources[stream.name] = builder.as_data_source(tfds_split_name(split))
    if first:
        distributed.barrier("mlst_data_prepared")
    return sources


def source_metadata(c, task, streams: Sequence[Stream], split: str, sources: dict[str, Any],
                    vocab) -> dict[str, pl.SourceMeta]:
    """`pl.scan_source` of every stream's source, cached in `<data.data_dir>/mlst_metadata/` under the builder
    version, the split, the input kind, a digest of the vocabulary and one of the source files the data was
    prepared from (scanning reads every example: ~2.4 s per 10,000 utterances); a cached file that does not match
    its source's size is scanned again."""
    dataset, _ = dataset_and_root(c)
    digest = hashlib.sha1(Path(vocab.spm_path).read_bytes()).hexdigest()[:12]
    root = Path(c.data.data_dir) / "mlst_metadata" / dataset / str(BUILDERS[dataset].VERSION)
    src_tokens = task.pipeline_config(train=True).source_tokens > 0
    kind = task.input + ("-src" if src_tokens else "")
    out = {}
    for stream in streams:
        src = sources[stream.name]
        prepared_from = source_digest(src.dataset_info.data_dir)
        path = root / f"{builder_config(c, stream)}-{split}-{kind}-{digest}-{prepared_from}.npz"
        if path.is_file():
            meta = pl.SourceMeta.load(path)
            if len(meta.n_frames) == len(src):
                out[stream.name] = meta
                continue
        out[stream.name] = pl.scan_source(src, vocab, stream.tgt, features=task.input, source_tokens=src_tokens)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{jax.process_index()}.tmp")
        out[stream.name].save(tmp)
        os.replace(tmp, path)
    return out


def local_batch_devices(n_batch_devices: int) -> int:
    """Devices of this process along the batch axes ("data" x "fsdp")."""
    return max(1, n_batch_devices // jax.process_count())


def train_pipeline(c, task, sources: dict[str, Any], vocab, n_batch_devices: int) -> pl.Pipeline:
    """The training pipeline of this process over `sources` (the task's training streams)."""
    streams = task.streams()
    return pl.make_train_pipeline(sources, vocab, task.pipeline_config(train=True),
                                  shard_index=jax.process_index(), shard_count=jax.process_count(),
                                  num_devices=local_batch_devices(n_batch_devices),
                                  metadata=task.metadata(c.data.train_split, streams, sources, vocab))


def multiway_batches(c, task, names: Sequence[str], split: str, vocab, batch_size: int,
                     max_utterances: int | None = None) -> MultiwayPipeline:
    """Multi-way batches of the streams `names` on corpus split `split`: the utterances present in all of them,
    with a reference per stream (`mlst_jax.data.multiway_pipeline`)."""
    by_name = {s.name: s for s in task.streams()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"streams {unknown} are not among the config's {sorted(by_name)}")
    streams = [by_name[n] for n in names]
    cfg = task.pipeline_config(train=False, langs=tuple(names), targets=tuple(s.tgt for s in streams))
    return make_multiway_pipeline(data_sources(c, streams, split), vocab, cfg, batch_size,
                                  max_utterances=max_utterances)


def global_batch_shape(shape: shapes.BatchShape) -> shapes.BatchShape:
    """One process's batch shape -> the global batch (its rows times the number of processes)."""
    axis = len(shape.tokens) - 2  # the rows: b of [G, b, ...] or B of [B, ...]

    def grow(dims):
        dims = list(dims)
        dims[axis] *= jax.process_count()
        return tuple(dims)
    return shapes.BatchShape(grow(shape.features), grow(shape.tokens))
