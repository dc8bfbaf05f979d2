"""XMEF at seed 001's full size on CoVoST 2: wav2vec 2.0 large LV-60 encoder (24 pre-LN layers, d=1024,
315.44M) → length adaptor (3 × Conv1d k=3 stride 2, 1024 → 2048, GLU: 8× downsampling, 18.88M) → mBART-50 decoder
(12 layers, d=1024, 16 heads, FFN 4096, vocabulary 250,054 tied with the output projection, 458.67M); 792,989,312
parameters ("793.0M"). Default finetuning: LNA-Minimalist (encoder LayerNorms, decoder LayerNorms + encoder
attention, adaptor).

Parameter counts (no weights are allocated):

    mlst params --config configs/xmef_covost_large.py                       # finetune.trainable
    mlst params --config configs/xmef_covost_large.py --finetune lna-d --json

Expected (trained parameters; seed 001's printed size in brackets):

    all                    792,989,312  (793.0M, Tables 1-5)
    lna-minimalist          69,447,680  (69.4M, Table 7; "LNA-E,D 69.4M", Tables 2 and 5)
    lna-minimalist-no-ln    69,261,312  (69.3M, Table 7 -LN)
    lna-minimalist-no-ea    19,066,880  (19.0M, Table 7 -EA)
    lna-minimalist+sa-dec  119,828,480  (119.8M, Table 7 +SA decoder)
    lna-minimalist+sa-enc  170,209,280  (170.2M, Table 7 +SA encoder)
    lna-ed                 170,209,280  (170.7M, Tables 1-5: the same rule; see docs/finetuning.md)
    lna-d                  384,777,856  (384.8M, Tables 1-4)
    lna-e                  578,420,736  (477.6M, Tables 2 and 5: the paper's figure is decoder + adaptor only)

Joint speech-text finetuning (`:joint`: the top 12 wav2vec 2.0 layers replaced by the 12 mBART encoder layers,
shared with the text encoder; every parameter trained):

    mlst params --config configs/xmef_covost_large.py:joint                 # 1,050,099,328 (1.05B)

Expected BLEU (seed 001, CoVoST 2 test; the XMEF rows of Tables 3 and 5):

    X→En (Table 3)      Fr   De   Es   Ca   It   Ru   Pt   Nl   Sl   Sv
    LNA-E,D (170.7M)   33.8 26.7 34.0 29.5 26.1 21.1 19.2 14.1  4.6  5.9
    LNA-D (384.8M)     35.0 28.2 35.2 31.1 27.6 22.8 24.1 14.2  5.0  5.0
    Finetune All       33.0 24.5 33.6 28.0 25.2 20.2 19.5  9.4  4.6  4.8
    Joint Training     33.5 28.6 33.5 30.6 26.6 17.6 12.0 15.0  3.9  2.6
    En→X (Table 5, avg over 15): LNA-E,D 69.4M 20.9; LNA-E,D 170.7M 22.5; LNA-E 24.2; Finetune All 24.5;
    Joint Training 25.1.

The miniature of this model on the synthetic corpus (pretraining, LNA finetuning, zero-shot matrix) is
`python -m mlst_jax.jobs.miniature --workdir DIR` (docs/xmef.md). Seed 001 gives no optimization settings; the
`optim` values below are placeholders for a finetuning run, not the paper's.

Finetuning on CoVoST 2 / Europarl-ST from HF checkpoints (commands for Tables 3, 5 and 6 in docs/reproducing.md;
the batch budget is per process, here 8 utterances x 15 s for each of 8 devices):

    mlst train --config configs/xmef_covost_large.py --workdir DIR \\
        --config.init.encoder=W2V2_DIR --config.init.decoder=MBART50_DIR \\
        --config.data.manual_dir=COVOST2_ROOT --config.data.data_dir=TFDS_DIR \\
        --config.data.max_frames_per_batch=15360000 --config.mesh.fsdp=8
    mlst compile --config configs/xmef_covost_large.py --mesh fsdp=8 --frames 240000 \\
        --config.data.max_frames_per_batch=15360000 --config.finetune.trainable=lna-d   # memory per device

Lengths are in samples (16 kHz): utterances over 30 s are dropped, batches are padded to one of the
`data.frame_buckets`. En→X directions into Catalan and Welsh, which mBART-50 lacks, need codes of other languages:
`--config.data.lang_codes=ca=es_XX,cy=fr_XX` (seed 001 does not say which it used).
"""
from mlst_jax.train.config import base_config

COVOST_X_EN = ("fr", "de", "es", "ca", "it", "ru", "pt", "nl", "sl", "sv", "fa", "zh", "tr", "et", "mn", "ar", "lv",
               "cy", "ta", "ja", "id")
COVOST_EN_X = ("ar", "ca", "cy", "de", "et", "fa", "id", "ja", "lv", "mn", "sl", "sv", "ta", "tr", "zh")
SECONDS = 16000  # samples per second


def get_config(arg: str = ""):
    """The full-size XMEF config (CoVoST 2, X→En, LNA-Minimalist); `joint`: joint speech-text finetuning."""
    if arg not in ("", "joint"):
        raise ValueError(f"configs/xmef_covost_large.py takes no argument or 'joint', got {arg!r}")
    c = base_config()
    c.model.family = "xmef"  # model.xmef defaults: wav2vec2-large LV-60, 3-layer adaptor, mBART-50 decoder

    c.data.dataset = "covost2"
    c.data.src_lang = "en"
    c.data.tgt_langs = COVOST_EN_X
    c.data.src_langs = COVOST_X_EN
    c.data.directions = "x-en"
    c.data.test_split = "test"
    c.data.max_frames = 30 * SECONDS
    c.data.frame_buckets = tuple(s * SECONDS for s in (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30))
    c.data.token_buckets = (16, 32, 64, 128, 256)
    c.data.max_frames_per_batch = 8 * 15 * SECONDS
    c.data.specaugment = ""  # wav2vec 2.0 masks its own features
    c.data.source_tokens = 128

    c.finetune.trainable = "lna-minimalist"
    if arg == "joint":
        c.model.xmef.joint_shared_layers = 12
        c.finetune.trainable = "all"
        c.data.directions = "x-en,en-x"

    # Seed 001 gives no optimization settings: these are placeholders for a finetuning run, not the paper's.
    c.optim.lr = 1e-4
    c.optim.warmup_updates = 2000
    c.optim.grad_accum = 1
    c.train.max_updates = 50000
    c.eval.beam = 5
    c.eval.batch_size = 8
    return c
