"""Sentence specs (:class:`NP`, :class:`Spec`), the :class:`Sentence` record, spec ids, the pattern table and
subject agreement.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple


class NP(NamedTuple):
    """A noun phrase over lexicon ids.

    `det` is "the", "a", "no", "num" (with `num`) or a possessive (my/his/her/our/their); `owner` is a possessor
    ("my brother's car"), `rel` a relative clause on a human head ("the man who reads the book").
    """

    noun: str
    det: str = "the"
    plural: bool = False
    adj: str | None = None
    num: int | None = None
    owner: NP | None = None
    rel: Spec | None = None


class Spec(NamedTuple):
    """A language-neutral sentence (or clause) specification.

    `subj` is a pronoun ("I", "he", "she", "we", "they") or an NP; `verb`, `place`, `adj` and `adv` are lexicon
    ids; `tense` is "present" or "past"; `comp` is the embedded clause of "complement_clause".
    """

    pattern: str
    subj: str | NP | None = None
    verb: str | None = None
    obj: NP | None = None
    place: str | None = None
    adj: str | None = None
    tense: str = "present"
    adv: str | None = None
    comp: Spec | None = None


@dataclass(frozen=True)
class Sentence:
    """One generated sentence: stable id, pattern name and its text in every language."""

    id: str
    pattern: str
    text: dict[str, str]


def spec_id(spec: Spec) -> str:
    """Stable id of a spec (sha1 of its canonical repr; independent of the Python hash seed)."""
    return hashlib.sha1(repr(spec).encode("utf-8")).hexdigest()[:16]


def _agr(subj) -> tuple:
    """(person index 0..3 for 1sg/3sg/1pl/3pl, pronoun gender or None, plural)."""
    if isinstance(subj, str):
        return _PRON_AGR[subj]
    return (3, None, True) if subj.plural else (1, None, False)


_KINDS = {  # pattern -> (renderer, negated, question)
    "transitive": ("event", False, False),
    "transitive_question": ("event", False, True),
    "transitive_negation": ("event", True, False),
    "intransitive": ("event", False, False),
    "intransitive_question": ("event", False, True),
    "intransitive_negation": ("event", True, False),
    "counted_objects": ("event", False, False),
    "existential_indefinite": ("exist", False, False),
    "existential_number": ("exist", False, False),
    "existential_negative": ("exist", False, False),
    "location": ("location", False, False),
    "location_question": ("location", False, True),
    "predicative": ("pred", False, False),
    "predicative_negation": ("pred", True, False),
    "predicative_question": ("pred", False, True),
    "possessive": ("pred", False, False),
    "relative_clause": ("event", False, False),
    "complement_clause": ("complement", False, False),
}
PATTERNS = tuple(_KINDS)
_PRON_AGR = {"I": (0, "m", False), "he": (1, "m", False), "she": (1, "f", False),
             "we": (2, "m", True), "they": (3, "m", True)}
