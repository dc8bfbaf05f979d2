"""Evaluation metrics."""
from mlst_jax.evaluate.bleu import BleuResult, corpus_bleu, corpus_chrf, score_by_language, tokenizer_for

__all__ = ["BleuResult", "corpus_bleu", "corpus_chrf", "score_by_language", "tokenizer_for"]
