"""The main job's shared model (`make demo`, `mlst_jax/jobs/demo.py`): a small S2T Transformer (d=256, 3 encoder and
2 decoder layers, vocabulary 1,600) on the `demo` synthetic corpus over the `demo` lexicon subset (26 nouns, 10
adjectives, 16 verbs, numbers to 12; all 18 patterns), English speech -> de, es, fr, it, nl, pt, ro, ru (MuST-C
layout, 10,000 training utterances per direction), 900 updates with the auxiliary CTC loss on the English
transcript (weight 1.0, in place of the recipe's ASR-pretrained encoder); the demo continues it 100 more updates
per system.

    make demo            # = python -m mlst_jax.jobs.demo --workdir workdir/demo

Expected result (2-core CPU, docs/benchmarks.md "The main job"): about 19 minutes in all; average test BLEU
multilingual 44.48, joint_ft 45.14, enc 45.18 (4.57x), random@2.0 45.12 (2.04x), grad@2.0 45.06 (2.01x).
"""
from mlst_jax.train.config import MUSTC_LANGS, base_config


def get_config():
    """The synth_demo experiment config."""
    c = base_config()
    c.model.s2t.arch = "s2t_transformer_s"
    c.model.s2t.overrides.d_model = 256
    c.model.s2t.overrides.encoder_layers = 3
    c.model.s2t.overrides.decoder_layers = 2
    c.model.s2t.overrides.encoder_ffn_dim = 1024
    c.model.s2t.overrides.decoder_ffn_dim = 1024
    c.model.s2t.overrides.encoder_attention_heads = 4
    c.model.s2t.overrides.decoder_attention_heads = 4
    c.model.s2t.overrides.conv_channels = 256
    c.model.s2t.overrides.dropout = 0.0  # a few epochs at most: nothing to regularize yet
    c.model.s2t.overrides.max_target_positions = 64
    c.model.s2t.vocab_size = 1600  # the demo lexicon's targets give SentencePiece about 1,600 pieces

    c.data.dataset = "synthetic"
    c.data.tgt_langs = MUSTC_LANGS
    c.data.max_frames = 512
    c.data.frame_buckets = (256, 512)
    c.data.token_buckets = (32,)
    c.data.max_frames_per_batch = 8192
    c.data.specaugment = ""
    c.data.ctc_max_chars = 96  # the demo corpus's longest transcript has 81

    c.optim.lr = 3e-3
    c.optim.ctc_weight = 1.0
    c.optim.schedule = "cosine"
    c.optim.warmup_updates = 150
    c.optim.min_lr = 1e-5
    c.optim.grad_accum = 1
    c.optim.label_smoothing = 0.1

    c.train.max_updates = 900
    c.train.log_every = 25
    c.train.eval_every = 0  # the demo scores every system on the test split afterwards
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 3
    c.train.average_last = 1  # the model is still improving fast: averaging 400-600 cost 1.6 BLEU
    c.demo.extra_steps = 100
    c.demo.lexicon = "demo"  # the corpus: mlst data synth --size demo --lexicon demo

    c.eval.beam = 4
    c.eval.max_len_b = 32
    c.eval.batch_size = 32
    c.eval.max_examples = 200  # test utterances per language
    return c
