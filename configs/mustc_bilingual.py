"""Bilingual MuST-C: en -> one target language with fairseq's s2t_transformer_s ST recipe. The language is the
config argument (`configs/mustc_bilingual.py:de`, one of de, es, fr, it, nl, pt, ro, ru).

    python -m mlst_jax.main --config configs/mustc_bilingual.py:de --workdir $RUN \\
        --config.data.manual_dir=$MUSTC_ROOT --config.data.data_dir=$DATA/tfds
    mlst evaluate --config configs/mustc_bilingual.py:de --workdir $RUN \\
        --config.data.manual_dir=$MUSTC_ROOT --config.data.data_dir=$DATA/tfds

Model: 12 encoder / 6 decoder layers, d=256, FFN 2048, 4 heads, dropout 0.1, untied output projection,
SentencePiece unigram vocabulary of 8,000 trained on that language's targets (31M parameters). Training: Adam
lr 2e-3, inverse-sqrt with 10k warmup updates, label smoothing 0.1, clipping 10, 40,000 frames per batch x 8
accumulated micro-batches, 100k updates, SpecAugment `lb` (fairseq's per-language MuST-C setting), utterance
CMVN. Evaluation: average of the last 10 checkpoints, beam 5, sacreBLEU on tst-COMMON.

Expected result (seed 000, Table 1, "Bilingual*", from fairseq S2T), BLEU on tst-COMMON: de 22.70, es 27.20,
fr 32.90, it 22.70, nl 27.30, pt 28.10, ro 21.90, ru 15.30 (avg 24.76). fairseq initialized the encoder from an
ASR model trained on the same direction; this config trains from scratch and has not been run to convergence
here, so expect somewhat lower scores. (Table 1 counts 8 x 76.3M parameters for its bilingual systems, i.e.
s2t_transformer_m sized; the BLEU scores it quotes are these s2t_transformer_s ones.)
"""
from mlst_jax.train.config import MUSTC_LANGS, base_config


def get_config(lang: str | None = None):
    """The bilingual config for target language `lang` (the `file.py:lang` argument)."""
    if lang not in MUSTC_LANGS:
        given = "no target language" if lang is None else f"unknown target language {lang!r}"
        raise ValueError(f"configs/mustc_bilingual.py: {given}; pass one of {', '.join(MUSTC_LANGS)} as "
                         f"configs/mustc_bilingual.py:de")
    c = base_config()
    c.model.s2t.arch = "s2t_transformer_s"
    c.model.s2t.vocab_size = 8000
    c.model.s2t.tie_word_embeddings = False

    c.data.dataset = "mustc"
    c.data.src_lang = "en"
    c.data.tgt_langs = (lang,)
    c.data.max_frames = 3000
    c.data.max_frames_per_batch = 40000
    c.data.specaugment = "lb"
    c.data.cmvn = "utterance"

    c.optim.lr = 2e-3
    c.optim.schedule = "inverse_sqrt"
    c.optim.warmup_updates = 10000
    c.optim.clip_norm = 10.0
    c.optim.grad_accum = 8
    c.optim.label_smoothing = 0.1

    c.train.max_updates = 100000
    c.train.checkpoint_every = 2000
    c.train.eval_every = 2000
    c.train.keep_checkpoints = 10
    c.train.average_last = 10

    c.sharing.strategy = "multilingual"  # one language: nothing to share or split
    c.eval.beam = 5
    c.eval.lenpen = 1.0
    return c
