"""End-to-end demo: espeak-ng speech → Kaldi fbank → a tiny S2T Transformer trained En→{de,fr} → export and
reload → beam search with the forced language tag → sacreBLEU on a voice held out from training.

    python -m mlst_jax.demo --workdir workdir/demo      (what `make demo` runs; ~2 minutes on 2 CPU cores)

Writes `<workdir>/model/` (an exported model `mlst translate` accepts) and `<workdir>/report.md`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from mlst_jax.audio import fbank, utterance_cmvn
from mlst_jax.data.synthetic.tts import synthesize_16k
from mlst_jax.data.vocab import EOS_ID, PAD_ID, train_vocab
from mlst_jax.evaluate import score_by_language
from mlst_jax.models.s2t_transformer import S2TConfig, S2TTransformer
from mlst_jax.train.losses import label_smoothed_nll
from mlst_jax.translator import Translator

SENTENCES = [  # (en, de, fr)
    ("the cat is black", "die Katze ist schwarz", "le chat est noir"),
    ("the dog is small", "der Hund ist klein", "le chien est petit"),
    ("the house is big", "das Haus ist groß", "la maison est grande"),
    ("I see the cat", "ich sehe die Katze", "je vois le chat"),
    ("I see the dog", "ich sehe den Hund", "je vois le chien"),
    ("we have a house", "wir haben ein Haus", "nous avons une maison"),
    ("the car is red", "das Auto ist rot", "la voiture est rouge"),
    ("she reads a book", "sie liest ein Buch", "elle lit un livre"),
    ("he drinks water", "er trinkt Wasser", "il boit de l'eau"),
    ("the book is new", "das Buch ist neu", "le livre est nouveau"),
    ("we see the car", "wir sehen das Auto", "nous voyons la voiture"),
    ("the water is cold", "das Wasser ist kalt", "l'eau est froide"),
    ("they have a dog", "sie haben einen Hund", "ils ont un chien"),
    ("the man is tall", "der Mann ist groß", "l'homme est grand"),
    ("the woman reads", "die Frau liest", "la femme lit"),
    ("I have two cats", "ich habe zwei Katzen", "j'ai deux chats"),
]
LANGS = ("de", "fr")
TRAIN_VOICES = (("m1", 160, 45), ("f2", 175, 60), ("m3", 190, 50), ("f4", 150, 55))
TEST_VOICE = ("m2", 170, 52)
FRAMES = 256


def tiny_config(vocab_size: int) -> S2TConfig:
    return S2TConfig(vocab_size=vocab_size, d_model=96, encoder_layers=3, encoder_ffn_dim=256,
                     encoder_attention_heads=4, decoder_layers=2, decoder_ffn_dim=256, decoder_attention_heads=4,
                     conv_channels=128, dropout=0.1, attention_dropout=0.0, activation_dropout=0.1,
                     tie_word_embeddings=True)


def features(voice) -> list[np.ndarray]:
    variant, rate, pitch = voice
    return [utterance_cmvn(fbank(synthesize_16k(en, "en", variant, rate, pitch)[0], 16000)) for en, *_ in SENTENCES]


def build_examples(feats: list[np.ndarray], vocab) -> dict[str, np.ndarray]:
    """Every utterance once per target language: padded features, decoder inputs, targets, loss weights."""
    rows = [(f, vocab.encode(SENTENCES[i % len(SENTENCES)][1 + j], lang)) for j, lang in enumerate(LANGS) for i, f in enumerate(feats)]
    u = max(len(t) for _, t in rows)
    out = {"feats": np.zeros((len(rows), FRAMES, 80), np.float32), "lens": np.zeros(len(rows), np.int32),
           "dec_in": np.full((len(rows), u), PAD_ID, np.int32), "tgt": np.full((len(rows), u), PAD_ID, np.int32),
           "w": np.zeros((len(rows), u), np.float32)}
    for r, (f, t) in enumerate(rows):
        n = min(len(f), FRAMES)
        out["feats"][r, :n], out["lens"][r] = f[:n], n
        out["tgt"][r, : len(t)] = t
        out["dec_in"][r, : len(t)] = [EOS_ID] + t[:-1]
        out["w"][r, 1: len(t)] = 1.0  # position 0 is the language tag: not scored
    return out


def train(cfg: S2TConfig, data: dict[str, np.ndarray], steps: int, batch: int, seed: int):
    model = S2TTransformer(cfg)
    key = jax.random.PRNGKey(seed)
    params = model.init(key, data["feats"][:1], data["lens"][:1], data["dec_in"][:1])["params"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, steps // 10, steps, 1e-4)
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, b, rng):
        def loss_fn(p):
            logits = model.apply({"params": p}, b["feats"], b["lens"], b["dec_in"], deterministic=False,
                                 rngs={"dropout": rng})
            loss, nll = label_smoothed_nll(logits, b["tgt"], b["w"], 0.1)
            return loss / b["w"].sum(), nll / b["w"].sum()

        (loss, nll), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, nll

    rng = np.random.default_rng(seed)
    bar = tqdm(range(steps), desc="train", unit="step")
    for i in bar:
        idx = rng.choice(len(data["lens"]), batch, replace=False)
        params, opt_state, nll = step(params, opt_state, {k: v[idx] for k, v in data.items()},
                                      jax.random.fold_in(key, i))
        if i % 20 == 0 or i == steps - 1:
            bar.set_postfix(nll=f"{float(nll):.3f}")
    return params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="workdir/demo")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    print(f"[1/4] synthesizing {len(SENTENCES)} sentences × {len(TRAIN_VOICES) + 1} voices with espeak-ng", flush=True)
    train_feats = [f for v in tqdm(TRAIN_VOICES, desc="voices") for f in features(v)]
    test_feats = features(TEST_VOICE)
    vocab = train_vocab([s[1 + j] for s in SENTENCES for j in range(len(LANGS))] * 4, work / "spm", 120, LANGS)
    cfg = tiny_config(len(vocab))

    print(f"[2/4] training a {cfg.d_model}-dim S2T Transformer on {len(train_feats) * len(LANGS)} examples", flush=True)
    params = train(cfg, build_examples(train_feats, vocab), args.steps, args.batch, args.seed)

    print("[3/4] exporting, reloading and decoding (beam 5) the held-out voice", flush=True)
    Translator(cfg, params, vocab).save(work / "model")
    translator = Translator.from_pretrained(work / "model")
    batch = np.zeros((len(test_feats), max(map(len, test_feats)), 80), np.float32)
    for i, f in enumerate(test_feats):
        batch[i, : len(f)] = f
    lens = np.array([len(f) for f in test_feats])
    results, samples = {}, {}
    for j, lang in enumerate(LANGS):
        hyps = [vocab.decode(ids) for ids in translator.generate(batch, lens, lang, beam_size=5)]
        results[lang] = (hyps, [s[1 + j] for s in SENTENCES])
        samples[lang] = list(zip([s[0] for s in SENTENCES[:3]], hyps[:3]))
    scores = score_by_language(results)

    print("[4/4] report", flush=True)
    lines = ["# mlst_jax demo", "", f"Tiny S2T Transformer ({sum(x.size for x in jax.tree.leaves(params)):,} "
             f"parameters), {args.steps} steps, evaluated on a voice not seen in training.", "",
             "| target | BLEU | chrF |", "|---|---|---|"]
    lines += [f"| {lang} | {scores[lang]['bleu']:.1f} | {scores[lang]['chrf']:.1f} |" for lang in LANGS]
    lines += [f"| avg | {scores['avg']['bleu']:.1f} | |", "", "Samples:", ""]
    lines += [f"- [{lang}] {src!r} → {hyp!r}" for lang in LANGS for src, hyp in samples[lang]]
    lines += ["", f"Total time: {time.time() - t0:.0f} s."]
    (work / "report.md").write_text("\n".join(lines) + "\n")
    (work / "scores.json").write_text(json.dumps(scores, indent=1))
    print("\n".join(lines[4:]))
    print(f"\nreport: {work / 'report.md'}\nmodel:  {work / 'model'} (try: mlst translate --checkpoint "
          f"{work / 'model'} --tgt-lang de some.wav)")


if __name__ == "__main__":
    main()
