"""A tiny XMEF (wav2vec 2.0 2 x 32 → 2-layer adaptor → mBART decoder 2 x 32) on the `tiny` synthetic corpus in the
CoVoST 2 layout, de→en and en→fr, scored on the zero-shot en→de too: a smoke test of the XMEF path of the one
training stack (waveform batches, LNA mask, checkpoints, evaluation per direction).

    mlst data synth --out /tmp/synth --size tiny --layouts covost2
    mlst train --config configs/xmef_synth_tiny.py --workdir /tmp/xmef_tiny \\
        --config.data.manual_dir=/tmp/synth/covost2 --config.data.data_dir=/tmp/xmef_tiny/tfds
    mlst evaluate --config configs/xmef_synth_tiny.py --workdir /tmp/xmef_tiny \\
        --config.data.manual_dir=/tmp/synth/covost2 --config.data.data_dir=/tmp/xmef_tiny/tfds

Without `init.*` the model starts from random weights and a vocabulary trained on the targets (LNA leaves it
almost nothing to learn: `--config.finetune.trainable=all` to see the loss fall); the tests start it from tiny random
HF checkpoints (`--config.init.encoder=W2V2_DIR --config.init.decoder=MBART_DIR`) of these sizes.

Expected result (2 CPU cores, 1 device, about a minute): loss 5.3 → 5.1 in 40 updates with LNA-Minimalist from
random weights; BLEU near 0 on de-en, en-fr and en-de (48 training utterances per direction: only the stack is
tested).
"""
from mlst_jax.train.config import base_config

SECONDS = 16000

ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=6,
               num_conv_pos_embedding_groups=4, feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True,
               layerdrop=0.0, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, mask_time_prob=0.0)
DECODER = dict(d_model=32, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=40, decoder_layers=2,
               decoder_attention_heads=4, decoder_ffn_dim=40, max_position_embeddings=64, scale_embedding=True,
               dropout=0.0, vocab_size=200)


def get_config(arg: str = ""):
    """The xmef_synth_tiny config; `joint`: joint speech-text training (1 shared layer, everything trained)."""
    if arg not in ("", "joint"):
        raise ValueError(f"configs/xmef_synth_tiny.py takes no argument or 'joint', got {arg!r}")
    c = base_config()
    c.model.family = "xmef"
    c.model.xmef.encoder_arch = "large_lv60"
    c.model.xmef.encoder.update(ENCODER)
    c.model.xmef.decoder.update(DECODER)
    c.model.xmef.adaptor_layers = 2

    c.data.dataset = "covost2"
    c.data.src_langs = ("de",)
    c.data.tgt_langs = ("de", "fr")
    c.data.directions = "de-en,en-fr"
    c.data.eval_directions = "de-en,en-fr,en-de"
    c.data.test_split = "test"
    c.data.max_frames = 4 * SECONDS
    c.data.frame_buckets = (4 * SECONDS,)  # one shape: one compilation of each step
    c.data.token_buckets = (64,)
    c.data.max_frames_per_batch = 16 * SECONDS  # 4 rows
    c.data.specaugment = ""
    c.data.source_tokens = 64

    c.finetune.trainable = "lna-minimalist"
    if arg == "joint":
        c.model.xmef.joint_shared_layers = 1
        c.finetune.trainable = "all"

    c.optim.lr = 2e-2
    c.optim.schedule = "constant"
    c.optim.warmup_updates = 2
    c.optim.grad_accum = 1

    c.train.max_updates = 40
    c.train.log_every = 5
    c.train.eval_every = 0
    c.train.checkpoint_every = 20
    c.train.keep_checkpoints = 2
    c.train.average_last = 1

    c.eval.beam = 1
    c.eval.max_len_b = 8
    c.eval.batch_size = 4
    return c
