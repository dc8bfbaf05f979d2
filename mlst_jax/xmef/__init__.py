"""XMEF (seed 001) beyond the model and its training (`mlst_jax.train.tasks.xmef`): translation directions and the
zero-shot matrix, the `mlst params --finetune` report of seed 001's trained-parameter sizes, and the miniature on the
synthetic corpus."""
