"""The XMEF miniature on the synthetic corpus: pretrain a tiny wav2vec 2.0 encoder (CTC ASR) and a tiny mBART (denoising
+ MT), compose them with a new length adaptor, LNA-finetune for ST on the chosen directions, and compare with a randomly
initialized XMEF trained with the same mask (same trained-parameter budget) and steps. Prints BLEU per direction and
the X→Y matrix (zero-shot cells for directions not trained on).

    python -m mlst_jax.xmef.miniature --workdir /tmp/xmef_mini
    python -m mlst_jax.xmef.miniature --workdir /tmp/xmef_mini --langs en,de,es,fr --directions english-centric \\
        --variant lna-d

docs/xmef.md has the measured numbers.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from mlst_jax.models.mbart import MBartConfig
from mlst_jax.models.wav2vec2 import Wav2Vec2Config, named_config
from mlst_jax.xmef import data as xdata
from mlst_jax.xmef import directions as dirs
from mlst_jax.xmef.finetune import compose, evaluate, finetune, random_init, st_examples
from mlst_jax.models.joint import JointConfig, joint_from_pretrained
from mlst_jax.xmef.joint import joint_examples, joint_finetune
from mlst_jax.xmef.pretrain import StageConfig, char_error_rate, ctc_pretrain, ctc_transcribe, mbart_pretrain


@dataclasses.dataclass(frozen=True)
class MiniatureConfig:
    """Sizes and schedules of the miniature (defaults: the `python -m mlst_jax.xmef.miniature` run)."""

    corpus: xdata.CorpusConfig = xdata.CorpusConfig()
    enc_width: int = 96
    enc_layers: int = 2
    dec_width: int = 96
    text_layers: int = 2  # mBART encoder and decoder layers
    vocab_size: int = 1000
    adaptor_layers: int = 2
    asr_langs: str = "all"  # "en" (the paper's English-only wav2vec 2.0) or "all"
    mbart_directions: str = "english-centric"
    directions: str = "english-centric"  # ST finetuning (mlst_jax.xmef.directions)
    eval_directions: str = "m2m"
    variant: str = "lna-minimalist"
    ctc: StageConfig = StageConfig(steps=400, batch_size=16, lr=2e-3, warmup=40)
    mbart: StageConfig = StageConfig(steps=600, batch_size=32, lr=3e-3, warmup=40)
    st: StageConfig = StageConfig(steps=300, batch_size=16, lr=2e-3, warmup=30)
    max_len: int = 24  # target tokens (tag and </s> included)
    beam: int = 1
    eval_examples: int = 0  # test utterances per direction (0: all)
    baseline: bool = True  # also train the randomly initialized XMEF
    joint_shared_layers: int = 0  # > 0: also run joint speech-text finetuning (mlst_jax.xmef.joint)
    joint_variant: str = "all"
    mt_weight: float = 1.0
    seed: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.corpus.max_seconds * xdata.SAMPLE_RATE)

    def encoder_config(self, vocab_size: int) -> Wav2Vec2Config:
        """The tiny wav2vec 2.0: large/LV-60 flavour (layer-norm feature extractor, pre-LN), 320× frame stride."""
        w = self.enc_width
        return named_config("large_lv60", vocab_size=vocab_size, hidden_size=w, num_hidden_layers=self.enc_layers,
                            num_attention_heads=4, intermediate_size=2 * w, conv_dim=(16, 32, 32),
                            conv_stride=(10, 4, 8), conv_kernel=(10, 4, 8), num_conv_pos_embeddings=8,
                            num_conv_pos_embedding_groups=4, hidden_dropout=0.0, activation_dropout=0.0,
                            attention_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
                            mask_time_prob=0.0)

    def mbart_config(self, vocab_size: int) -> MBartConfig:
        d = self.dec_width
        return MBartConfig(vocab_size=vocab_size, d_model=d, encoder_layers=self.text_layers,
                           decoder_layers=self.text_layers, encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=2 * d, decoder_ffn_dim=2 * d, dropout=0.1,
                           max_position_embeddings=max(self.max_len + 2, 32))


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def run(cfg: MiniatureConfig, workdir: str | Path, progress: bool = True, quiet: bool = False) -> dict:
    """Runs the miniature; returns (and writes to `workdir/results.json`) the measurements."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    langs = cfg.corpus.langs
    results: dict = {"config": dataclasses.asdict(cfg), "timings_s": {}}

    def tick(name, t0):
        results["timings_s"][name] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    corpus = xdata.build_corpus(cfg.corpus, cache_dir=workdir, progress=progress)
    vocab = xdata.text_vocab(corpus, workdir / "spm", cfg.vocab_size)
    tick("data", t0)
    _log(f"corpus: {', '.join(langs)}; {len(corpus.sentences['train'])} train / {len(corpus.sentences['test'])} test "
         f"sentences spoken in each language, {len(corpus.sentences['text'])} text-only; vocabulary {len(vocab)}",
         quiet)

    # (a) speech encoder: CTC ASR
    asr_langs = langs if cfg.asr_langs == "all" else tuple(cfg.asr_langs.split(","))
    asr = [(w, corpus.sentences["train"][i].text[l]) for l in asr_langs for i, w in corpus.utterances("train", l)]
    chars = xdata.CharVocab.from_texts([t for _, t in asr])
    enc_cfg = cfg.encoder_config(len(chars))
    t0 = time.perf_counter()
    ctc_params, h = ctc_pretrain(enc_cfg, asr, chars, cfg.ctc, cfg.n_samples, progress=progress)
    cer = {}
    for l in asr_langs:
        utts = corpus.utterances("test", l)[:32]
        hyps = ctc_transcribe(enc_cfg, ctc_params, [w for _, w in utts], chars, cfg.n_samples)
        cer[l] = char_error_rate(hyps, [corpus.sentences["test"][i].text[l] for i, _ in utts])
    tick("ctc", t0)
    results["ctc"] = {"loss_first": h["first_loss"], "loss_last": h["last_loss"], "test_cer": cer}
    _log(f"CTC: loss {h['first_loss']:.2f} → {h['last_loss']:.2f}; test CER "
         + ", ".join(f"{l} {100 * c:.1f}%" for l, c in cer.items()), quiet)

    # (b) text model: mBART denoising + MT
    texts = {l: corpus.texts("train", l) + corpus.texts("text", l) for l in langs}
    mb_cfg = cfg.mbart_config(len(vocab))
    t0 = time.perf_counter()
    mb_params, h = mbart_pretrain(mb_cfg, texts, vocab, cfg.mbart, dirs.parse_directions(cfg.mbart_directions, langs),
                                  langs, cfg.max_len, progress=progress)
    tick("mbart", t0)
    results["mbart"] = {"loss_first": h["first_loss"], "loss_last": h["last_loss"]}
    _log(f"mBART: loss {h['first_loss']:.2f} → {h['last_loss']:.2f}", quiet)

    # (c) XMEF: pretrained parts + new adaptor vs random init, same mask and steps
    xcfg, pre = compose((enc_cfg, ctc_params), (mb_cfg, mb_params), seed=cfg.seed, adaptor_layers=cfg.adaptor_layers)
    train_dirs = dirs.parse_directions(cfg.directions, langs)
    eval_dirs = dirs.parse_directions(cfg.eval_directions, langs)
    examples = st_examples(corpus, vocab, train_dirs)
    runs = {"pretrained": pre}
    if cfg.baseline:
        runs["random"] = random_init(xcfg, cfg.seed)
    step_fn = None
    for name, params in runs.items():
        t0 = time.perf_counter()
        params, h = finetune(xcfg, params, examples, cfg.variant, cfg.st, cfg.n_samples, cfg.max_len,
                             progress=progress, desc=f"ST ({name})", step_fn=step_fn)
        step_fn = h["step_fn"]
        scores = evaluate(xcfg, params, corpus, vocab, eval_dirs, cfg.n_samples, cfg.max_len, cfg.beam,
                          examples=cfg.eval_examples)
        tick(f"st_{name}", t0)
        results[name] = {"trained_params": h["trained_params"], "loss_first": h["first_loss"],
                         "loss_last": h["last_loss"], "bleu": {k: v["bleu"] for k, v in scores.items()},
                         "examples": {k: v["examples"] for k, v in scores.items()}}
        bleu = results[name]["bleu"]
        _log(f"XMEF {name} ({cfg.variant}, {h['trained_params']:,} trained): loss {h['first_loss']:.2f} → "
             f"{h['last_loss']:.2f}; BLEU " + ", ".join(f"{k} {v:.1f}" for k, v in bleu.items()), quiet)
    if cfg.joint_shared_layers:
        t0 = time.perf_counter()
        jcfg = JointConfig(xcfg, cfg.joint_shared_layers)
        jparams, h = joint_finetune(jcfg, joint_from_pretrained(jcfg, pre, mb_params),
                                    joint_examples(corpus, vocab, train_dirs), cfg.st, cfg.n_samples, cfg.max_len,
                                    variant=cfg.joint_variant, mt_weight=cfg.mt_weight, progress=progress)
        scores = evaluate(jcfg, jparams, corpus, vocab, eval_dirs, cfg.n_samples, cfg.max_len, cfg.beam,
                          examples=cfg.eval_examples)
        tick("joint", t0)
        runs["joint"] = jparams
        results["joint"] = {"loss_first": h["first_loss"], "loss_last": h["last_loss"],
                            "bleu": {k: v["bleu"] for k, v in scores.items()},
                            "examples": {k: v["examples"] for k, v in scores.items()}}
        _log(f"joint ST+MT ({cfg.joint_shared_layers} shared layers, {cfg.joint_variant}): loss "
             f"{h['first_loss']:.2f} → {h['last_loss']:.2f}; BLEU "
             + ", ".join(f"{k} {v:.1f}" for k, v in results["joint"]["bleu"].items()), quiet)
    zs = dirs.zero_shot(train_dirs, langs)
    for name in runs:
        bleu = results[name]["bleu"]
        results[name]["avg_supervised"] = dirs.average(bleu, train_dirs)
        results[name]["avg_zero_shot"] = dirs.average(bleu, zs)
    results["supervised"] = [f"{s}-{t}" for s, t in train_dirs]
    results["zero_shot"] = [f"{s}-{t}" for s, t in zs if (s, t) in eval_dirs]
    results["timings_s"]["total"] = round(time.perf_counter() - start, 1)
    baseline = results["random"]["bleu"] if cfg.baseline else None
    results["matrix"] = dirs.bleu_matrix(results["pretrained"]["bleu"], langs, train_dirs, baseline)
    _log(("BLEU (random init / pretrained):\n" if cfg.baseline else "BLEU:\n") + results["matrix"], quiet)
    (workdir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results


def main(argv: list[str] | None = None) -> int:
    d = MiniatureConfig()
    p = argparse.ArgumentParser(prog="python -m mlst_jax.xmef.miniature", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="corpus cache, vocabulary and results.json")
    p.add_argument("--langs", default=",".join(d.corpus.langs), help="comma-separated, must include en")
    p.add_argument("--train-sentences", type=int, default=d.corpus.train_sentences)
    p.add_argument("--test-sentences", type=int, default=d.corpus.test_sentences)
    p.add_argument("--text-sentences", type=int, default=d.corpus.text_sentences)
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
        corpus = xdata.CorpusConfig(langs=tuple(a.langs.split(",")), train_sentences=a.train_sentences,
                                    test_sentences=a.test_sentences, text_sentences=a.text_sentences, seed=a.seed)
        cfg = dataclasses.replace(
            d, corpus=corpus, directions=a.directions, eval_directions=a.eval_directions,
            mbart_directions=a.mbart_directions, asr_langs=a.asr_langs, variant=a.variant, beam=a.beam,
            baseline=not a.no_baseline, joint_shared_layers=a.joint_shared_layers, mt_weight=a.mt_weight, seed=a.seed, ctc=dataclasses.replace(d.ctc, steps=a.ctc_steps),
            mbart=dataclasses.replace(d.mbart, steps=a.mbart_steps), st=dataclasses.replace(d.st, steps=a.st_steps))
        run(cfg, a.workdir, progress=not a.quiet)
    except ValueError as e:
        print(f"xmef miniature: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
