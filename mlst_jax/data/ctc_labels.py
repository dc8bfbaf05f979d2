"""Character labels of a transcript for CTC (`mlst_jax.train.ctc`): the auxiliary loss of the S2T encoder and
the wav2vec 2.0 ASR pretraining of the XMEF miniature."""
from __future__ import annotations

import unicodedata
from typing import Sequence

__all__ = ["ALPHABET", "BLANK_ID", "VOCAB_SIZE", "char_labels", "label_text", "normalize"]

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
BLANK_ID = 0
VOCAB_SIZE = len(ALPHABET) + 1
_INDEX = {ch: i + 1 for i, ch in enumerate(ALPHABET)}
_SPELLED = {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "\u2019": "'"}


def normalize(text: str) -> str:
    """A transcript as the alphabet spells it: lower case, Latin letters without their diacritics (é → e, ß →
    ss), any other character a space, runs of spaces collapsed. Scripts other than Latin leave only spaces."""
    text = "".join(_SPELLED.get(ch, ch) for ch in text.lower())
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return " ".join("".join(ch if ch in _INDEX else " " for ch in text).split())


def char_labels(text: str) -> list[int]:
    """Label ids of a transcript (`normalize`d)."""
    return [_INDEX[ch] for ch in normalize(text)]


def label_text(ids: Sequence[int]) -> str:
    """Greedy CTC decoding of frame labels: repeats merged, blanks dropped."""
    out, prev = [], BLANK_ID
    for i in map(int, ids):
        if i != prev and i != BLANK_ID:
            out.append(ALPHABET[i - 1])
        prev = i
    return "".join(out)
