"""The XMEF miniature on the synthetic corpus, every stage a run of the one trainer (`mlst_jax.train.trainer`):
pretrain a tiny wav2vec 2.0 encoder (CTC ASR, `model.family=wav2vec2_ctc`) and a tiny mBART (denoising + MT,
`model.family=mbart`), export both as HF directories, start an XMEF from them (`init.encoder`, `init.decoder`) with
a new length adaptor, LNA-finetune it for ST on the chosen directions, and compare with a randomly initialized XMEF
trained with the same mask (the same trained-parameter budget) and steps. Prints BLEU per direction and the X→Y
matrix (zero-shot cells for directions not trained on).

    python -m mlst_jax.jobs.miniature --workdir /tmp/xmef_mini
    python -m mlst_jax.jobs.miniature --workdir /tmp/xmef_mini --langs en,de,es,fr --directions english-centric \\
        --variant lna-d

The corpus is `synthesize_corpus` in the Europarl-ST layout (`corpus/europarl_st`: the languages' speeches, each
translated into the others; sentences of at most `max_words` English words), read through the TFDS builder and
the Grain pipeline; the text-only sentences of the mBART stage are bitext files (`bitext/<src>-<tgt>.tsv`), and
one SentencePiece vocabulary with `<lang:xx>` tags serves every stage. Each stage's run directory (checkpoints,
metrics.jsonl, config.json) is kept under the workdir. docs/xmef.md has the measured numbers.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np

from mlst_jax.audio.io import SAMPLE_RATE
from mlst_jax.data import directions as dirs
from mlst_jax.data import pipeline as pl
from mlst_jax.data.ctc_labels import normalize
from mlst_jax.data.layouts import read_europarl_st
from mlst_jax.data.synthetic.corpus import synthesize_corpus
from mlst_jax.data.synthetic.grammar import sample_sentences
from mlst_jax.data.vocab import Vocab, train_vocab
from mlst_jax.models.params import count_params
from mlst_jax.train import inputs
from mlst_jax.train.config import base_config
from mlst_jax.train.run import Run
from mlst_jax.train.tasks.ctc import export_hf as export_w2v2
from mlst_jax.train.tasks.ctc import transcribe
from mlst_jax.train.tasks.mbart import export_hf as export_mbart
from mlst_jax.train.trainer import evaluate, train_and_evaluate



@dataclasses.dataclass(frozen=True)
class Stage:
    """Updates, rows per update, peak learning rate and warmup of one training stage."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 30


@dataclasses.dataclass(frozen=True)
class MiniatureConfig:
    """Sizes and schedules of the miniature (defaults: the `python -m mlst_jax.jobs.miniature` run)."""

    langs: tuple[str, ...] = ("en", "de", "fr")
    train: int = 300  # training utterances per source language (each translated into the other languages)
    test: int = 40  # test utterances per source language
    text: int = 3000  # text-only sentences (mBART pretraining), besides the transcripts
    max_words: int = 6
    max_seconds: float = 2.5  # longer utterances are dropped
    enc_width: int = 96
    enc_layers: int = 2
    dec_width: int = 96
    text_layers: int = 2  # mBART encoder and decoder layers
    vocab_size: int = 1000
    adaptor_layers: int = 2
    asr_langs: str = "all"  # "en" (the paper's English-only wav2vec 2.0) or "all"
    mbart_directions: str = "english-centric"
    directions: str = "english-centric"  # ST finetuning (mlst_jax.data.directions)
    eval_directions: str = "m2m"
    variant: str = "lna-minimalist"
    ctc: Stage = Stage(steps=400, batch_size=16, lr=2e-3, warmup=40)
    mbart: Stage = Stage(steps=600, batch_size=32, lr=3e-3, warmup=40)
    st: Stage = Stage(steps=300, batch_size=16, lr=2e-3, warmup=30)
    max_len: int = 24  # target tokens (tag and </s> included)
    beam: int = 1
    eval_examples: int = 0  # test utterances per direction (0: all)
    baseline: bool = True  # also train the randomly initialized XMEF
    joint_shared_layers: int = 0  # > 0: also run joint speech-text finetuning
    joint_variant: str = "all"
    mt_weight: float = 1.0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "langs", tuple(self.langs))
        if "en" not in self.langs or len(set(self.langs)) != len(self.langs) or len(self.langs) < 2:
            raise ValueError(f"langs {list(self.langs)}: need 'en' and at least one other language, no repeats")

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(l for l in self.langs if l != "en")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


# -- data ---------------------------------------------------------------------------------------------------------


def build_data(cfg: MiniatureConfig, workdir: Path, progress: bool) -> dict:
    """The speech corpus (Europarl-ST layout), the text-only bitext and the vocabulary (reused when present)."""
    corpus = workdir / "corpus"
    key = {"langs": list(cfg.langs), "size": [cfg.train, 4, cfg.test], "max_words": cfg.max_words, "seed": cfg.seed,
           "text": cfg.text, "vocab_size": cfg.vocab_size}
    stamp = workdir / "data.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != key:
        synthesize_corpus(corpus, key["size"], seed=cfg.seed, layouts=("europarl_st",), langs=cfg.langs,
                          max_words=cfg.max_words, progress=progress, overwrite=True)
        texts = {l: [] for l in cfg.langs}
        seen = set()
        for src in cfg.langs:
            for tgt in cfg.langs:
                if src != tgt:
                    for split in ("train", "dev", "test"):
                        for u in read_europarl_st(corpus / "europarl_st", src, tgt, split):
                            seen.add(u.src_text if src == "en" else u.tgt_text if tgt == "en" else "")
                            if split == "train":
                                texts[src].append(u.src_text)
                                texts[tgt].append(u.tgt_text)
        extra = [s for s in sample_sentences(cfg.text + len(seen), cfg.seed + 7, max_words=cfg.max_words)
                 if s.text["en"] not in seen][: cfg.text]
        bitext = workdir / "bitext"
        bitext.mkdir(parents=True, exist_ok=True)
        for src, tgt in dirs.parse_directions(cfg.mbart_directions, cfg.langs):
            (bitext / f"{src}-{tgt}.tsv").write_text("".join(f"{s.text[src]}\t{s.text[tgt]}\n" for s in extra),
                                                     encoding="utf-8")
        all_texts = [t for l in cfg.langs for t in texts[l]] + [s.text[l] for s in extra for l in cfg.langs]
        train_vocab(all_texts, workdir / "spm", cfg.vocab_size, list(cfg.langs))
        stamp.write_text(json.dumps(key))
    return {"corpus": corpus / "europarl_st", "bitext": workdir / "bitext", "vocab": Vocab.from_spm(workdir / "spm.model")}


# -- stage configs ------------------------------------------------------------------------------------------------


def stage_config(cfg: MiniatureConfig, data: dict, workdir: Path, family: str, stage: Stage,
                 directions: str) -> ml_collections.ConfigDict:
    """The experiment config of one stage: the miniature's model sizes, corpus, vocabulary and schedule."""
    c = base_config()
    c.seed = cfg.seed
    c.model.family = family
    m, w, d = c.model.xmef, cfg.enc_width, cfg.dec_width
    m.encoder_arch = "large_lv60"  # the large flavour: layer-norm feature extractor, pre-LN layers
    m.encoder.update(hidden_size=w, num_hidden_layers=cfg.enc_layers, num_attention_heads=4, intermediate_size=2 * w,
                     conv_dim=(16, 32, 32), conv_stride=(10, 4, 8), conv_kernel=(10, 4, 8), num_conv_pos_embeddings=8,
                     num_conv_pos_embedding_groups=4, hidden_dropout=0.0, activation_dropout=0.0,
                     attention_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
                     mask_time_prob=0.0)
    m.decoder.update(vocab_size=len(data["vocab"]), d_model=d, encoder_layers=cfg.text_layers,
                     decoder_layers=cfg.text_layers, encoder_attention_heads=4, decoder_attention_heads=4,
                     encoder_ffn_dim=2 * d, decoder_ffn_dim=2 * d, dropout=0.1,
                     max_position_embeddings=max(cfg.max_len + 2, 32))
    m.adaptor_layers = cfg.adaptor_layers

    c.data.dataset = "europarl_st"
    c.data.manual_dir, c.data.data_dir = str(data["corpus"]), str(workdir / "tfds")
    c.data.vocab = str(data["vocab"].spm_path)
    c.data.src_lang, c.data.src_langs, c.data.tgt_langs = "en", cfg.others, cfg.others
    c.data.directions = directions
    c.data.test_split = "test"
    c.data.specaugment = ""
    c.data.token_buckets = (cfg.max_len,)
    samples = int(round(cfg.max_seconds * SAMPLE_RATE))
    steps = cfg.max_len if family == "mbart" else samples  # text batches count source tokens
    c.data.max_frames, c.data.frame_buckets = steps, (steps,)
    c.data.max_frames_per_batch = stage.batch_size * steps
    c.data.ctc_max_chars = 64
    c.data.source_tokens = cfg.max_len

    c.optim.lr, c.optim.schedule, c.optim.warmup_updates = stage.lr, "cosine", stage.warmup
    c.optim.warmup_init_lr, c.optim.clip_norm, c.optim.grad_accum = 0.0, 1.0, 1
    c.train.max_updates = stage.steps
    c.train.log_every = max(1, stage.steps // 50)
    c.train.eval_every, c.train.checkpoint_every = 0, stage.steps
    c.train.keep_checkpoints, c.train.average_last = 1, 1
    c.eval.beam, c.eval.max_len_b, c.eval.batch_size = cfg.beam, cfg.max_len - 2, 32
    c.eval.max_examples = cfg.eval_examples
    return c


def _losses(run: Path) -> dict:
    """First logged training loss and the mean of the last 10% of the logged ones."""
    losses = [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    return {"loss_first": losses[0], "loss_last": float(np.mean(losses[-max(1, len(losses) // 10):]))}


def _train(c, run: Path, progress: bool) -> tuple[dict, object, object]:
    """Trains `c` in `run`; (losses, task, parameters of the last checkpoint)."""
    c.train.progress = progress
    train_and_evaluate(c, run)
    with Run(run) as r:
        return _losses(run), r.task, r.params()


# -- CER ----------------------------------------------------------------------------------------------------------


def char_error_rate(hyps, refs) -> float:
    """Levenshtein distance summed over pairs / reference characters."""
    errors = total = 0
    for h, r in zip(hyps, refs):
        prev = list(range(len(h) + 1))
        for i, rc in enumerate(r, 1):
            cur = [i]
            for j, hc in enumerate(h, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc)))
            prev = cur
        errors += prev[-1]
        total += len(r)
    return errors / max(total, 1)


def test_cer(c, task, params, vocab, n: int = 32) -> dict[str, float]:
    """Greedy CTC CER on the first `n` test utterances of each ASR stream's source language."""
    out = {}
    streams = task.streams()
    sources = task.sources(c.data.test_split, streams)
    for s in streams:
        src = sources[s.name]
        ids = list(range(min(n, len(src))))
        pcfg = task.pipeline_config(train=False, langs=(s.tgt,), targets=())
        pipe = pl.make_eval_pipeline([src[i] for i in ids], vocab, pcfg, 16, lang=s.tgt)
        hyps = dict(transcribe(task.model_config(vocab), params, pipe))
        pipe.close()
        out[s.src] = char_error_rate([hyps[i] for i in sorted(hyps)],
                                     [normalize(inputs.text(src[i]["src_text"])) for i in sorted(hyps)])
    return out


# -- the run ------------------------------------------------------------------------------------------------------


def run(cfg: MiniatureConfig, workdir: str | Path, progress: bool = True, quiet: bool = False) -> dict:
    """Runs the miniature; returns (and writes to `workdir/results.json`) the measurements."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {"config": dataclasses.asdict(cfg), "timings_s": {}}

    def tick(name, t0):
        results["timings_s"][name] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    data = build_data(cfg, workdir, progress)
    tick("data", t0)
    _log(f"corpus: {', '.join(cfg.langs)}; {cfg.train} training and {cfg.test} test utterances per source language "
         f"(Europarl-ST layout, sentences of at most {cfg.max_words} words), {cfg.text} text-only sentences; "
         f"vocabulary {len(data['vocab'])}", quiet)

    # (a) speech encoder: CTC ASR
    t0 = time.perf_counter()
    asr = cfg.langs if cfg.asr_langs == "all" else tuple(cfg.asr_langs.split(","))
    asr_dirs = ",".join(f"{l}-{'en' if l != 'en' else cfg.others[0]}" for l in asr)
    c = stage_config(cfg, data, workdir, "wav2vec2_ctc", cfg.ctc, asr_dirs)
    losses, task, ctc_params = _train(c, workdir / "ctc", progress)
    cer = test_cer(c, task, ctc_params, data["vocab"])
    encoder_dir = export_w2v2(task.model_config(data["vocab"]), ctc_params, workdir / "ctc" / "hf")
    tick("ctc", t0)
    results["ctc"] = {**losses, "test_cer": cer}
    _log(f"CTC: loss {losses['loss_first']:.2f} → {losses['loss_last']:.2f}; test CER "
         + ", ".join(f"{l} {100 * x:.1f}%" for l, x in cer.items()), quiet)

    # (b) text model: mBART denoising + MT
    t0 = time.perf_counter()
    c = stage_config(cfg, data, workdir, "mbart", cfg.mbart, cfg.mbart_directions)
    c.data.bitext, c.data.denoise_langs = str(data["bitext"]), cfg.langs
    losses, task, mbart_params = _train(c, workdir / "mbart", progress)
    decoder_dir = export_mbart(task.model_config(data["vocab"]), mbart_params, workdir / "mbart" / "hf")
    tick("mbart", t0)
    results["mbart"] = losses
    _log(f"mBART: loss {losses['loss_first']:.2f} → {losses['loss_last']:.2f}", quiet)

    # (c) XMEF: pretrained parts + new adaptor vs random initialization, same mask and steps
    runs = {"pretrained": {"init.encoder": str(encoder_dir), "init.decoder": str(decoder_dir)}}
    if cfg.baseline:
        runs["random"] = {}
    if cfg.joint_shared_layers:
        runs["joint"] = {"init.encoder": str(encoder_dir), "init.decoder": str(decoder_dir)}
    train_dirs = dirs.parse_directions(cfg.directions, cfg.langs)
    for name, init in runs.items():
        t0 = time.perf_counter()
        c = stage_config(cfg, data, workdir, "xmef", cfg.st, cfg.directions)
        c.data.eval_directions, c.finetune.trainable = cfg.eval_directions, cfg.variant
        for field, value in init.items():
            c.init[field.split(".")[1]] = value
        if name == "joint":
            c.model.xmef.joint_shared_layers, c.finetune.trainable = cfg.joint_shared_layers, cfg.joint_variant
            c.optim.mt_weight = cfg.mt_weight
        losses, task, params = _train(c, workdir / name, progress)
        scores = evaluate(c, workdir / name)
        tick(name, t0)
        bleu = {k: v for k, v in scores.items() if "-" in k and not k.startswith("mt_")}
        trained = count_params(params, task.trainable_mask(params))
        results[name] = {"trained_params": trained, **losses, "bleu": bleu,
                         "avg_supervised": scores["avg_supervised"], "avg_zero_shot": scores["avg_zero_shot"]}
        _log(f"XMEF {name} ({c.finetune.trainable}, {trained:,} trained): loss {losses['loss_first']:.2f} → "
             f"{losses['loss_last']:.2f}; BLEU " + ", ".join(f"{k} {v:.1f}" for k, v in bleu.items()), quiet)
    zs = dirs.zero_shot(train_dirs, cfg.langs)
    results["supervised"] = [f"{s}-{t}" for s, t in train_dirs]
    results["zero_shot"] = [f"{s}-{t}" for s, t in zs
                            if (s, t) in dirs.parse_directions(cfg.eval_directions, cfg.langs)]
    results["timings_s"]["total"] = round(time.perf_counter() - start, 1)
    baseline = results["random"]["bleu"] if cfg.baseline else None
    results["matrix"] = dirs.bleu_matrix(results["pretrained"]["bleu"], cfg.langs, train_dirs, baseline)
    _log(("BLEU (random init / pretrained):\n" if cfg.baseline else "BLEU:\n") + results["matrix"], quiet)
    (workdir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results


def main(argv: list[str] | None = None) -> int:
    d = MiniatureConfig()
    p = argparse.ArgumentParser(prog="python -m mlst_jax.jobs.miniature", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="corpus, vocabulary, one run directory per stage, results.json")
    p.add_argument("--langs", default=",".join(d.langs), help="comma-separated, must include en")
    p.add_argument("--train", type=int, default=d.train, help="training utterances per source language")
    p.add_argument("--test", type=int, default=d.test, help="test utterances per source language")
    p.add_argument("--text", type=int, default=d.text, help="text-only sentences for the mBART stage")
    p.add_argument("--directions", default=d.directions, help="ST training directions: x-en, en-x, "
                                                              "english-centric, m2m or src-tgt pairs")
    p.add_argument("--eval-directions", default=d.eval_directions)
    p.add_argument("--mbart-directions", default=d.mbart_directions)
    p.add_argument("--asr-langs", default=d.asr_langs, help="'all' or comma-separated languages for CTC")
    p.add_argument("--variant", default=d.variant, help="LNA variant (mlst_jax.finetune.lna)")
    p.add_argument("--ctc-steps", type=int, default=d.ctc.steps)
    p.add_argument("--mbart-steps", type=int, default=d.mbart.steps)
    p.add_argument("--st-steps", type=int, default=d.st.steps)
    p.add_argument("--beam", type=int, default=d.beam)
    p.add_argument("--no-baseline", action="store_true", help="skip the randomly initialized XMEF")
    p.add_argument("--joint-shared-layers", type=int, default=d.joint_shared_layers,
                   help="> 0: also run joint speech-text finetuning with this many shared encoder layers")
    p.add_argument("--mt-weight", type=float, default=d.mt_weight, help="MT task weight of joint finetuning")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    try:
        cfg = dataclasses.replace(
            d, langs=tuple(a.langs.split(",")), train=a.train, test=a.test, text=a.text, directions=a.directions,
            eval_directions=a.eval_directions, mbart_directions=a.mbart_directions, asr_langs=a.asr_langs,
            variant=a.variant, beam=a.beam, baseline=not a.no_baseline, joint_shared_layers=a.joint_shared_layers,
            mt_weight=a.mt_weight, seed=a.seed, ctc=dataclasses.replace(d.ctc, steps=a.ctc_steps),
            mbart=dataclasses.replace(d.mbart, steps=a.mbart_steps), st=dataclasses.replace(d.st, steps=a.st_steps))
        run(cfg, a.workdir, progress=not a.quiet)
    except ValueError as e:
        print(f"xmef miniature: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
