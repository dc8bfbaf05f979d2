"""Lexicon: the data files under ``mlst_jax/data/synthetic/lexicon/`` and queries on nouns and adjectives."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

LANGS = ("en", "de", "es", "fr", "it", "nl", "pt", "ro", "ru")
PRONOUNS = ("I", "he", "she", "we", "they")
POSS = ("my", "his", "her", "our", "their")
_DATA_PACKAGE = __package__.rpartition(".")[0]  # mlst_jax.data.synthetic, which holds lexicon/


def _load(name: str) -> dict:
    text = (resources.files(_DATA_PACKAGE) / "lexicon" / name).read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def _split(entry: dict) -> dict:
    return {k: (v.split("|") if k in LANGS or k == "de_animal" else v) for k, v in entry.items()}


NOUNS = {k: _split(v) for k, v in _load("nouns.json").items()}
ADJS = {k: _split(v) for k, v in _load("adjectives.json").items()}
VERBS = {k: _split(v) for k, v in _load("verbs.json").items()}
ADVS = _load("adverbials.json")
FW = _load("function_words.json")
NUMS = _load("numbers.json")
for _n in NOUNS.values():
    _n["tags"] = frozenset(_n["tags"].split())
    _n["at"] = frozenset(_n["at"].split())
for _d in (*ADJS.values(), *VERBS.values()):
    for _k in ("on", "not", "obj", "subj", "places"):
        _d[_k] = frozenset(_d.get(_k, "").split())


def _ids(n: str) -> frozenset:
    return NOUNS[n]["tags"] | {n}


def _match(on: frozenset, excl: frozenset, noun: str) -> bool:
    ids = _ids(noun)
    return bool(on & ids) and not (excl & ids)


def _countable(n: str) -> bool:
    return "mass" not in NOUNS[n]["tags"]


def _nums(n: str) -> tuple:
    t = NOUNS[n]["tags"]
    return (False,) if "mass" in t or "sgonly" in t else (False, True)


def _dets(n: str) -> tuple:
    """Determiners for a definite noun phrase: kin terms take possessives, generic people ('the man') do not."""
    t = NOUNS[n]["tags"]
    return POSS if "kin" in t else ("the",) if "generic" in t else ("the",) + POSS


def _located(n: str, place: str) -> bool:
    at = NOUNS[n]["at"]
    return "*" in at or place in at or NOUNS[place]["class"] in at


@lru_cache(maxsize=None)
def _adjs(n: str, use: str) -> tuple:
    if use == "attr" and "kin" in NOUNS[n]["tags"]:
        return ()
    return tuple(a for a, d in ADJS.items() if d.get("use", use) == use and _match(d["on"], d["not"], n))


class LexiconSubset(NamedTuple):
    """The lexicon ids a corpus draws on, and the largest number it counts to."""

    nouns: frozenset
    adjectives: frozenset
    verbs: frozenset
    max_number: int


def lexicon_subsets() -> tuple[str, ...]:
    """Names of the lexicon subsets: ``"full"`` and those in ``lexicon/subsets.json``."""
    return ("full", *_load("subsets.json"))


@lru_cache(maxsize=None)
def lexicon_subset(name: str) -> LexiconSubset:
    """The named subset: ``"full"`` (every word, numbers up to 99) or one from ``lexicon/subsets.json`` (the
    ``"demo"`` subset: 26 nouns, 10 adjectives, 16 verbs, numbers up to 12)."""
    if name == "full":
        return LexiconSubset(frozenset(NOUNS), frozenset(ADJS), frozenset(VERBS), 99)
    subsets = _load("subsets.json")
    if name not in subsets:
        raise ValueError(f"unknown lexicon subset {name!r}; choose from {', '.join(lexicon_subsets())}")
    entry = subsets[name]
    words = {}
    for field, known in (("nouns", NOUNS), ("adjectives", ADJS), ("verbs", VERBS)):
        words[field] = frozenset(entry[field].split())
        unknown = sorted(words[field] - known.keys())
        if unknown:
            raise ValueError(f"lexicon/subsets.json: {name}.{field} has ids that are not in the lexicon: "
                             f"{', '.join(unknown)}")
    max_number = entry["max_number"]
    if not isinstance(max_number, int) or not 2 <= max_number <= 99:
        raise ValueError(f"lexicon/subsets.json: {name}.max_number must be an integer in 2..99, got {max_number!r}")
    return LexiconSubset(max_number=max_number, **words)
