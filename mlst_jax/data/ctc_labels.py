"""Character labels of a source transcript for the auxiliary CTC loss (`mlst_jax.train.ctc`)."""
from __future__ import annotations

__all__ = ["ALPHABET", "BLANK_ID", "VOCAB_SIZE", "char_labels"]

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
BLANK_ID = 0
VOCAB_SIZE = len(ALPHABET) + 1
_INDEX = {ch: i + 1 for i, ch in enumerate(ALPHABET)}


def char_labels(text: str) -> list[int]:
    """Label ids of a transcript: lower-cased, other characters read as spaces, runs of spaces collapsed."""
    text = text.lower().replace("\u2019", "'")
    text = " ".join("".join(ch if ch in _INDEX else " " for ch in text).split())
    return [_INDEX[ch] for ch in text]
