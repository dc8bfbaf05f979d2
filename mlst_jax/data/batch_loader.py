"""Reading the examples of a planned batch into arrays: features (fbank on the CPU backend, waveforms or text),
CMVN, SpecAugment, targets, CTC labels, source tokens and mBART noise; the Grain iterator over the plan."""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
from typing import Sequence

import grain
import jax
import numpy as np
from absl import flags

from mlst_jax.audio.cmvn import GlobalCMVN, normalize_waveform, utterance_cmvn
from mlst_jax.audio.fbank import FRAME_LENGTH, FRAME_SHIFT, fbank_batch, num_frames
from mlst_jax.audio.specaugment import get_policy
from mlst_jax.data.batch_shapes import PipelineConfig
from mlst_jax.data.ctc_labels import char_labels
from mlst_jax.data.source_meta import _read, _source_ids, _text
from mlst_jax.data.vocab import EOS_ID, PAD_ID

__all__ = ["PipelineStats"]

logger = logging.getLogger(__name__)

FBANK_ROWS = 8


@dataclasses.dataclass
class PipelineStats:
    """Examples kept and dropped (per stream and reason), per-epoch sample sizes, and load errors.

    Load errors, transcripts too long for CTC labels and truncated source tokens are counted in the process
    that reads the data (not visible from grain worker processes).
    """

    kept: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped_by_lang: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
    epoch_examples: dict[str, int] = dataclasses.field(default_factory=dict)
    load_errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    ctc_too_long: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    src_truncated: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def dropped(self) -> collections.Counter:
        """Dropped examples per reason, all streams together."""
        return sum(self.dropped_by_lang.values(), collections.Counter())

    def summary(self) -> str:
        """One line per stream: kept, dropped per reason, examples per epoch."""
        lines = []
        for lang in self.kept:
            drops = ", ".join(f"{r}={c}" for r, c in sorted(self.dropped_by_lang.get(lang, {}).items()) if c) or "none"
            per_epoch = f", {self.epoch_examples[lang]} per epoch" if lang in self.epoch_examples else ""
            lines.append(f"{lang}: kept {self.kept[lang]}, dropped {drops}{per_epoch}")
        if self.ctc_too_long:
            lines.append("transcripts too long for CTC labels (no CTC loss on them): "
                         + ", ".join(f"{l}={n}" for l, n in sorted(self.ctc_too_long.items())))
        if self.src_truncated:
            lines.append("source tokens truncated: "
                         + ", ".join(f"{l}={n}" for l, n in sorted(self.src_truncated.items())))
        return "\n".join(lines)


def _pad(rows: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([rows, np.full(size - len(rows), -1, rows.dtype)])


def _span_mask(ids: np.ndarray, rng: np.random.Generator, ratio: float, span: float, mask_id: int) -> np.ndarray:
    """mBART's span masking of ``[tag, pieces..., </s>]``: spans of Poisson(``span``) pieces (at least 1, the
    last one cut to fit) from random unmasked starts until ``floor(ratio * pieces + 0.5)`` pieces are covered;
    every run of covered pieces becomes one ``mask_id``."""
    pieces = ids[1:-1]
    covered = np.zeros(len(pieces), bool)
    goal = int(math.floor(ratio * len(pieces) + 0.5))
    while (left := goal - int(covered.sum())) > 0:
        start = int(rng.choice(np.flatnonzero(~covered)))
        covered[start : start + min(max(1, int(rng.poisson(span))), left)] = True
    first = covered & ~np.concatenate([[False], covered[:-1]])
    return np.concatenate([ids[:1], np.where(first, mask_id, pieces)[~covered | first], ids[-1:]])


class _BatchLoader:
    """Reads a planned batch's examples and builds its arrays (features, CMVN, SpecAugment, tokens).

    ``langs`` names the streams (rows' ``lang`` ids index it), ``targets`` their target languages (default:
    ``langs``). A spec with ``references`` (multi-way batches: ``references[k][row]`` is the row's encoded
    target in stream ``k``) gets ``[n_streams, rows, U]`` targets from it instead of the examples' own.
    In training, rows of ``cfg.text_streams`` are text-only (no features) and batches carry ``speech``.
    """

    def __init__(self, sources: list, kinds: list[str], vocab, langs: list[str], cfg: PipelineConfig, train: bool,
                 shard_index: int, stats: PipelineStats, targets: Sequence[str] | None = None):
        self.sources, self.kinds, self.vocab, self.langs = sources, kinds, vocab, langs
        self.targets = list(targets or langs)
        self.waveform, self.text = cfg.features == "waveform", cfg.features == "text"
        self.cmvn = cfg.cmvn
        self.global_cmvn = GlobalCMVN.load(cfg.global_cmvn_path) if cfg.cmvn == "global" else None
        self.specaugment = get_policy(cfg.specaugment) if train else None
        self.seed, self.shard_index, self.on_bad = cfg.seed, shard_index, cfg.on_bad_example
        self.stats = stats
        self.train, self.ctc_max_chars, self.source_tokens = train, cfg.ctc_max_chars, cfg.source_tokens
        self.noise = {i for i, l in enumerate(langs) if l in cfg.noise_streams} if train and self.text else set()
        self.noise_ratio, self.noise_span, self.mask_id = cfg.noise_ratio, cfg.noise_span, cfg.mask_id
        self.mark_speech = train and bool(cfg.text_streams)
        self.text_streams = [i for i, l in enumerate(langs) if l in cfg.text_streams] if self.mark_speech else []

    def __call__(self, spec: dict) -> dict[str, np.ndarray]:
        shape, refs = spec["shape"], spec.get("references")
        lead, u = shape.tokens[:-1], shape.tokens[-1]
        t = shape.features[len(lead)]
        slot, example, lang = spec["slot"].reshape(-1), spec["example"].reshape(-1), spec["lang"].reshape(-1)
        r = slot.size
        feats = None if self.text else np.zeros((r, *shape.features[len(lead):]), np.float32)
        lengths, samples = np.zeros(r, np.int32), np.zeros(r, np.int32)
        waves = None
        n_tgt = 1 if refs is None else len(refs)
        dec, tgt = np.full((n_tgt, r, u), PAD_ID, np.int32), np.full((n_tgt, r, u), PAD_ID, np.int32)
        weights = np.zeros((n_tgt, r, u), np.float32)
        valid = np.zeros(r, np.int32)
        n_ctc = self.ctc_max_chars if self.train else 0
        ctc_labels, ctc_pad = np.zeros((r, n_ctc), np.int32), np.ones((r, n_ctc), np.float32)
        n_src = t if self.text else self.source_tokens
        src_tokens = np.full((r, n_src), PAD_ID, np.int32)
        text_rows = (slot >= 0) & np.isin(lang, self.text_streams)
        for s in np.unique(slot[slot >= 0]):
            rows = np.flatnonzero(slot == s)
            for row, ex in zip(rows, _read(self.sources[s], example[rows])):
                try:
                    if refs is None:
                        ids = [self.vocab.encode(_text(ex["tgt_text"]), self.targets[lang[row]])]
                        if len(ids[0]) > u:
                            raise ValueError(f"target of {len(ids[0])} tokens exceeds the batch's {u}")
                    else:
                        ids = [refs[k][row] for k in range(n_tgt)]
                    src = self._source(ex, lang[row]) if self.source_tokens else []
                    if text_rows[row]:
                        pass  # no features: feature_lengths 0
                    elif self.text:
                        src = _source_ids(self.vocab, ex)
                        if len(src) > t:
                            raise ValueError(f"source of {len(src)} tokens exceeds the batch's {t}")
                        lengths[row] = len(src)
                    elif self.waveform:
                        pcm = np.asarray(ex["audio"])[:t]
                        if not len(pcm):
                            raise ValueError("no samples")
                        feats[row, : len(pcm)], lengths[row] = pcm.astype(np.float32) / 32768.0, len(pcm)
                    elif self.kinds[s] == "audio":
                        pcm = np.asarray(ex["audio"])[: FRAME_LENGTH + (t - 1) * FRAME_SHIFT]
                        if len(pcm) < FRAME_LENGTH:
                            raise ValueError(f"{len(pcm)} samples, fewer than one frame")
                        if waves is None:
                            waves = np.zeros((r, FRAME_LENGTH + (t - 1) * FRAME_SHIFT), np.float32)
                        waves[row, : len(pcm)] = pcm.astype(np.float32) / 32768.0
                        lengths[row], samples[row] = num_frames(len(pcm)), len(pcm)
                    else:
                        fb = np.asarray(ex["fbank"], np.float32)[:t]
                        feats[row, : len(fb)], lengths[row] = fb, len(fb)
                except Exception as e:
                    if self.on_bad == "raise":
                        raise ValueError(f"{self.langs[lang[row]]} example {example[row]}: {e}") from e
                    self.stats.load_errors[self.langs[lang[row]]] += 1
                    logger.warning("skipping %s example %d: %s", self.langs[lang[row]], example[row], e)
                    lengths[row] = samples[row] = 0
                    continue
                valid[row] = 1
                if n_ctc and not text_rows[row]:
                    self._ctc(ex, row, lang[row], ctc_labels, ctc_pad)
                src_tokens[row, : len(src)] = src
                for k, target in enumerate(ids):
                    tgt[k, row, : len(target)] = target
                    dec[k, row, : len(target)] = [EOS_ID] + target[:-1]
                    weights[k, row, 1 : len(target)] = 1.0
        if waves is not None:
            audio_rows = np.flatnonzero((samples > 0) & (valid == 1))
            for i in range(0, len(audio_rows), FBANK_ROWS):
                chunk = audio_rows[i : i + FBANK_ROWS]
                w, n = np.zeros((FBANK_ROWS, waves.shape[1]), np.float32), np.zeros(FBANK_ROWS, np.int32)
                w[: len(chunk)], n[: len(chunk)] = waves[chunk], samples[chunk]
                feats[chunk] = _fbank_cpu(w, n)[: len(chunk)]
        lengths *= valid
        if not self.text:
            feats = self._normalize(feats, lengths)
        if self.specaugment is not None:
            # one generator per global row: independent of the process count
            for row in np.flatnonzero(valid & ~text_rows):
                rng = np.random.default_rng([self.seed, 1, spec["index"], int(spec["row"][row])])
                feats[row] = self.specaugment(feats[row], rng, lengths[row])
        for row in np.flatnonzero(valid & np.isin(lang, sorted(self.noise))):  # per global row, as SpecAugment
            rng = np.random.default_rng([self.seed, 2, spec["index"], int(spec["row"][row])])
            noised = _span_mask(src_tokens[row, : lengths[row]], rng, self.noise_ratio, self.noise_span, self.mask_id)
            src_tokens[row], lengths[row] = PAD_ID, len(noised)
            src_tokens[row, : len(noised)] = noised
        tokens = (*lead, u) if refs is None else (n_tgt, *lead, u)
        out = {} if self.text else dict(features=feats.reshape(*lead, *feats.shape[1:]))
        out.update(feature_lengths=lengths.reshape(lead), decoder_input=dec.reshape(tokens),
                   target=tgt.reshape(tokens), loss_weights=weights.reshape(tokens), valid=valid.reshape(lead),
                   index=np.where(valid == 1, example, -1).astype(np.int32).reshape(lead))
        if self.mark_speech:
            out["speech"] = (valid & ~text_rows).astype(np.int32).reshape(lead)
        if n_ctc:
            out.update(ctc_labels=ctc_labels.reshape(*lead, n_ctc), ctc_label_paddings=ctc_pad.reshape(*lead, n_ctc))
        if n_src:
            out["src_tokens"] = src_tokens.reshape(*lead, n_src)
        if spec["group_lang"] is not None:
            out["group_lang"] = spec["group_lang"]
        elif refs is None:
            out["lang"] = lang.astype(np.int32)
        return out

    def _normalize(self, feats: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        if self.waveform:
            out = np.zeros_like(feats)
            for row in np.flatnonzero(lengths):
                w = feats[row, : lengths[row]]
                out[row, : len(w)] = normalize_waveform(w) if self.cmvn else w
            return out
        if self.cmvn == "utterance":
            return utterance_cmvn(feats, lengths)
        if self.cmvn == "global":
            feats = self.global_cmvn.apply(feats)
        return np.where((np.arange(feats.shape[1]) < lengths[:, None])[..., None], feats, 0.0).astype(np.float32)

    def _source(self, ex, lang: int) -> list[int]:
        """The row's transcript as source tokens; longer than source_tokens: an error in training (such
        examples are filtered out), cut to ``[tag, pieces..., </s>]`` of source_tokens in evaluation (counted)."""
        ids = _source_ids(self.vocab, ex)
        if len(ids) <= self.source_tokens:
            return ids
        if self.train:
            raise ValueError(f"transcript of {len(ids)} tokens exceeds source_tokens={self.source_tokens}")
        self.stats.src_truncated[self.langs[lang]] += 1
        return ids[: self.source_tokens - 1] + [EOS_ID]

    def _ctc(self, ex, row: int, lang: int, labels: np.ndarray, paddings: np.ndarray) -> None:
        """The row's source transcript as CTC labels; a transcript longer than ctc_max_chars gets none (counted)."""
        if "src_text" not in ex:
            raise ValueError("CTC labels need the source transcript, but the example has no 'src_text' "
                             f"(keys: {sorted(ex)})")
        ids = char_labels(_text(ex["src_text"]))
        if len(ids) > labels.shape[1]:
            self.stats.ctc_too_long[self.langs[lang]] += 1
            return
        labels[row, : len(ids)] = ids
        paddings[row, : len(ids)] = 0.0


def _fbank_cpu(waves: np.ndarray, n_samples: np.ndarray) -> np.ndarray:
    with jax.default_device(jax.local_devices(backend="cpu")[0]):  # process-local in multi-process runs
        feats, _ = fbank_batch(waves, n_samples)
        return np.asarray(feats)


def _worker_init(worker_index: int, worker_count: int) -> None:
    jax.config.update("jax_platforms", "cpu")


def _grain_iter(ds, cfg: PipelineConfig):
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch))
    if cfg.worker_count > 0:
        if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags (defaults suffice)
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count), worker_init_fn=_worker_init)
    return ds
