"""S2T Transformers on the synthetic corpus (`mlst data synth`, MuST-C layout, English speech -> up to 8 targets).
The variant is the config argument: `configs/synth.py:tiny`, `configs/synth.py:demo` or `configs/synth.py:demo_tiny`.

`tiny`: a tiny model (d=64, 2 encoder and 2 decoder layers, vocabulary 400) on the `tiny` corpus (en -> de, es, fr),
300 updates: a smoke test of the whole training stack.

    mlst data synth --out /tmp/synth_corpus --size tiny
    python -m mlst_jax.main --config configs/synth.py:tiny --workdir /tmp/synth_tiny \\
        --config.data.manual_dir=/tmp/synth_corpus --config.data.data_dir=/tmp/synth_tiny/tfds

Expected result (measured on 2 shared CPU cores, 1 CPU device, ~80 s wall including compiles and two evals):
train loss 5.7 -> 2.06 (train nll 1.36) at step 300; dev nll 4.04; dev BLEU (beam 4) de 2.1, es 1.2, fr 2.8,
avg 2.0 (48 training utterances per direction: the model memorizes; BLEU only shows the stack works).

`demo`: the main job's shared model (`make demo`, `mlst_jax/jobs/demo.py`): a small S2T Transformer (d=256,
3 encoder and 2 decoder layers, vocabulary 1,600) on the `demo` synthetic corpus over the `demo` lexicon subset
(26 nouns, 10 adjectives, 16 verbs, numbers to 12; all 18 patterns), English speech -> de, es, fr, it, nl, pt, ro,
ru (MuST-C layout, 10,000 training utterances per direction), 900 updates with the auxiliary CTC loss on the English
transcript (weight 1.0, in place of the recipe's ASR-pretrained encoder); the demo continues it 100 more updates
per system.

    make demo            # = python -m mlst_jax.jobs.demo --workdir workdir/demo

Expected result (2-core CPU, docs/benchmarks.md "The main job"): about 19 minutes in all; average test BLEU
multilingual 44.48, joint_ft 45.14, enc 45.18 (4.57x), random@2.0 45.12 (2.04x), grad@2.0 45.06 (2.01x).

`demo_tiny`: the main job shrunk to a smoke test: the `tiny` model on the `tiny` synthetic corpus (16-48 utterances
per split), 8 target languages, 12 shared updates and 4 more per system. Every stage of the demo runs; the BLEU
scores mean nothing at this size.

    python -m mlst_jax.jobs.demo --workdir /tmp/demo_tiny --config configs/synth.py:demo_tiny --size tiny

Expected result: `/tmp/demo_tiny/report.md` with five rows (multilingual 0.38M, joint_ft 0.38M, enc 1.67M = 4.43x,
random@2.0 0.76M = 2.00x, grad@2.0 about 2.0x), BLEU near 0 and the similarity figures, in about two and a half
minutes on 2 CPU cores.
"""
import ml_collections

from mlst_jax.train.config import MUSTC_LANGS, base_config

VARIANTS = ("tiny", "demo", "demo_tiny")


def _model(c: ml_collections.ConfigDict, d_model: int, encoder_layers: int, decoder_layers: int, ffn_dim: int,
           conv_channels: int, dropout: float, max_target_positions: int, vocab_size: int) -> None:
    """A small s2t_transformer_s with 4 heads."""
    c.model.s2t.arch = "s2t_transformer_s"
    c.model.s2t.overrides.update(dict(
        d_model=d_model, encoder_layers=encoder_layers, decoder_layers=decoder_layers, encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim, encoder_attention_heads=4, decoder_attention_heads=4, conv_channels=conv_channels,
        dropout=dropout, max_target_positions=max_target_positions))
    c.model.s2t.vocab_size = vocab_size


def _tiny(c: ml_collections.ConfigDict) -> None:
    """`tiny`: the tiny model, 300 updates on the tiny corpus's en -> de, es, fr."""
    _model(c, d_model=64, encoder_layers=2, decoder_layers=2, ffn_dim=256, conv_channels=128, dropout=0.1,
           max_target_positions=128, vocab_size=400)
    c.data.tgt_langs = ("de", "es", "fr")
    c.data.token_buckets = (32, 64)
    c.data.max_frames_per_batch = 6144

    c.optim.lr = 2e-3
    c.optim.warmup_updates = 50

    c.train.max_updates = 300
    c.train.log_every = 10
    c.train.eval_every = 150
    c.train.average_last = 3

    c.eval.max_len_b = 40
    c.eval.batch_size = 16


def _demo_job(c: ml_collections.ConfigDict, ctc_weight: float, max_updates: int, log_every: int,
              checkpoint_every: int, extra_steps: int) -> None:
    """What the main job needs: 8 targets, the CTC loss on the transcripts, the `demo` lexicon, no dev evaluation
    (the demo scores every system on the test split afterwards)."""
    c.data.tgt_langs = MUSTC_LANGS
    c.data.ctc_max_chars = 96  # the demo corpus's longest transcript has 81
    c.optim.ctc_weight = ctc_weight
    c.train.max_updates = max_updates
    c.train.log_every = log_every
    c.train.eval_every = 0
    c.train.checkpoint_every = checkpoint_every
    c.demo.extra_steps = extra_steps
    c.demo.lexicon = "demo"  # the corpus: mlst data synth --size demo --lexicon demo


def _demo(c: ml_collections.ConfigDict) -> None:
    """`demo`: the main job's shared model, 900 updates with the CTC loss (weight 1.0), cosine schedule."""
    _model(c, d_model=256, encoder_layers=3, decoder_layers=2, ffn_dim=1024, conv_channels=256,
           dropout=0.0,  # a few epochs at most: nothing to regularize yet
           max_target_positions=64,
           vocab_size=1600)  # the demo lexicon's targets give SentencePiece about 1,600 pieces
    _demo_job(c, ctc_weight=1.0, max_updates=900, log_every=25, checkpoint_every=100, extra_steps=100)
    c.data.token_buckets = (32,)
    c.data.max_frames_per_batch = 8192
    c.data.specaugment = ""

    c.optim.lr = 3e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_updates = 150
    c.optim.min_lr = 1e-5

    c.train.average_last = 1  # the model is still improving fast: averaging 400-600 cost 1.6 BLEU

    c.eval.max_len_b = 32
    c.eval.batch_size = 32
    c.eval.max_examples = 200  # test utterances per language


def _demo_tiny(c: ml_collections.ConfigDict) -> None:
    """`demo_tiny`: `tiny` shrunk to 12 shared updates and 4 per system over the main job's 8 targets."""
    _tiny(c)
    _demo_job(c, ctc_weight=0.3, max_updates=12, log_every=4, checkpoint_every=4, extra_steps=4)
    c.eval.beam = 2
    c.eval.max_len_b = 12
    c.eval.max_examples = 8


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """The synthetic-corpus config of `variant` (the `configs/synth.py:VARIANT` argument; see the module docstring)."""
    if variant not in VARIANTS:
        given = "no variant" if variant is None else f"unknown variant {variant!r}"
        raise ValueError(f"configs/synth.py: {given}; pass one of {', '.join(VARIANTS)} as configs/synth.py:tiny")
    c = base_config()
    c.data.dataset = "synthetic"
    c.data.max_frames = 512
    c.data.frame_buckets = (256, 512)
    c.optim.grad_accum = 1
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 3
    c.eval.beam = 4
    {"tiny": _tiny, "demo": _demo, "demo_tiny": _demo_tiny}[variant](c)
    return c
