"""Deterministic multi-way parallel sentences in nine languages (en, de, es, fr, it, nl, pt, ro, ru).

A sentence is first drawn as a language-neutral :class:`Spec` (pattern, subject, verb, object, place, adjective,
tense, time adverbial, ...) and then rendered by one small grammar per language. Every spec has exactly one
rendering per language, so the corpus is a clean n-way parallel set for speech-translation training and evaluation.

Patterns (``PATTERNS``)::

    transitive              Every morning my brother reads the old book.
    transitive_question     Does the man read the newspaper?
    transitive_negation     Our neighbor does not sell the big house.
    intransitive            Yesterday the girls stayed at the hotel.
    intransitive_question   Did her cat eat in the kitchen?
    intransitive_negation   She did not stay at the hotel.
    counted_objects         I see twenty-three cats.
    existential_indefinite  There is a big horse on the beach.
    existential_number      There are twenty-one books in the room.
    existential_negative    There is no bird in the garden.
    location                My uncle was at the school.
    location_question       Was she at the airport?
    predicative             Our chair is clean.
    predicative_negation    The stations are not big.
    predicative_question    Is his bag yellow?
    possessive              My brother's car is red.
    relative_clause         The man who buys the car works at the station.
    complement_clause       I know that the girl read the letter yesterday.

The lexicon (nouns with gender, plural and case forms; adjectives; verb paradigms), closed-class words, inflection
tables, number words and adverbials are data files under ``lexicon/``; this module holds the rules that combine them
(agreement, case, word order, articles, elision and contractions). Choices that a language leaves open are fixed
once: European Portuguese, Spanish from Spain with the preterite for the past, passé composé / passato prossimo /
perfect compus, German and Dutch perfect, Russian aspect chosen per verb; subject pronouns are dropped for "I"
and "we" in es/it/pt/ro; "they" is rendered masculine. To avoid gender guesses, "I" never occurs in the past tense
or with predicative adjectives, and possessives in objects never refer back to the subject (Russian would need
"свой"). Past-tense statements always carry a past time adverbial, so English "read"/"cut" are never ambiguous.

The spec space is a union of disjoint products, so it is counted exactly (``num_distinct_sentences``) and sampled
uniformly within each pattern. Ids are sha1 hashes of the spec, stable across runs and Python hash seeds.
"""
from __future__ import annotations

import bisect
import gc
import hashlib
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

__all__ = ["LANGS", "PATTERNS", "NP", "Spec", "Sentence", "render", "sample_sentences", "num_distinct_sentences",
           "pattern_counts", "number_word", "spec_id"]

LANGS = ("en", "de", "es", "fr", "it", "nl", "pt", "ro", "ru")
PRONOUNS = ("I", "he", "she", "we", "they")
POSS = ("my", "his", "her", "our", "their")


def _load(name: str) -> dict:
    text = (resources.files(__package__) / "lexicon" / name).read_text(encoding="utf-8")
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


# ------------------------------------------------------------------------------------------------- specs


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


# ------------------------------------------------------------------------------------------------- helpers


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


def _cap(s: str) -> str:
    for i, ch in enumerate(s):
        if ch.isalpha():
            return s[:i] + ch.upper() + s[i + 1:]
    return s


def _join(*parts) -> str:
    return " ".join(filter(None, parts))


def number_word(n: int, lang: str, gender: str = "m") -> str:
    """Cardinal 1..99 as a word in `lang` (gender: 'm', 'f' or 'n' where the language inflects numerals)."""
    if not 1 <= n <= 99:
        raise ValueError(f"number out of range: {n}")
    d = NUMS[lang]
    tens, unit = divmod(n, 10)
    if lang == "en":
        return d["units"][n] if n < 20 else d["tens"][tens] + ("-" + d["units"][unit] if unit else "")
    if lang in ("de", "nl"):
        if n < 20 or unit == 0:
            return d["units"][n] if n < 20 else d["tens"][tens]
        u = d["one_in_compound"] if unit == 1 else d["units"][unit]
        if lang == "de":
            return u + d["and"] + d["tens"][tens]
        return u + ("ën" if u.endswith("e") else "en") + d["tens"][tens]
    if lang == "fr":
        if n < 20:
            w = d["units"][n]
        elif n < 70:
            w = d["tens"][tens] + ("" if unit == 0 else " et un" if unit == 1 else "-" + d["units"][unit])
        elif n < 80:  # 70-79 = 60 + 10..19
            w = d["tens"][6] + (" et onze" if n == 71 else "-" + d["units"][n - 60])
        else:  # 80-99 = 4 * 20 + 0..19
            w = d["eighty"] if n == 80 else d["tens"][8] + "-" + d["units"][n - 80]
        return w[:-2] + "une" if gender == "f" and w.endswith("un") else w
    if lang == "es":
        w = d["units"][n] if n < 30 else d["tens"][tens] + (" y " + d["units"][unit] if unit else "")
        return w[:-1] + "a" if gender == "f" and w.endswith("uno") else w
    if lang == "it":
        if n < 20:
            return d["units"][n]
        t = d["tens"][tens]
        if unit in (1, 8):
            t = t[:-1]
        return t + (d["three_in_compound"] if unit == 3 else d["units"][unit] if unit else "")
    if lang in ("pt", "ro"):
        if n < 20:
            u, w = d["units"][n], ""
        else:
            u = d["units"][unit] if unit else ""
            w = d["tens"][tens] + (" " + d["and"] + " " if unit else "")
        if gender == "f" or (lang == "ro" and gender == "n" and u != "unu"):
            u = d["feminine"].get(u, u)
        return w + u
    if lang == "ru":
        if n < 20:
            w, u = "", n
        else:
            w, u = d["tens"][tens], unit
        if not u:
            return w
        uw = d["one"]["nom"][gender] if u == 1 else d["two_f"] if (u == 2 and gender == "f") else d["units"][u]
        return _join(w, uw)
    raise ValueError(f"unknown language {lang!r}")


def _ru_num_phrase(n: int, noun: list, case: str) -> str:
    """Russian numeral + noun in the nominative or accusative, with the numeral's case government and animacy."""
    g, anim = noun[0], noun[1] == "a" and case == "acc"
    last, last2 = n % 10, n % 100
    w = number_word(n, "ru", g)
    if last == 1 and last2 != 11:
        head, _, _ = w.rpartition(" ")
        return _join(head, NUMS["ru"]["one"]["acc_animate" if anim else case][g], noun[2] if case == "nom" else noun[3])
    if last in (2, 3, 4) and last2 not in (12, 13, 14):
        if anim and n < 5:
            return _join(NUMS["ru"]["animate_acc"][str(n)], noun[6])
        return _join(w, noun[4])
    return _join(w, noun[6])


# ------------------------------------------------------------------------------------------------- languages


class _Lang:
    """Common sentence assembly; subclasses supply noun phrases and clause word order."""

    code = ""

    def __init__(self):
        self.fw = FW[self.code]
        self._cache: dict = {}
        self._locs: dict = {}

    def np(self, np: NP, case: str = "nom") -> str:
        """Noun phrase in the given case (memoized)."""
        key = (np, case)
        s = self._cache.get(key)
        if s is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            s = self._cache[key] = self._np(np, case)
        return s

    def render(self, spec: Spec) -> str:
        kind, neg, question = _KINDS[spec.pattern]
        if kind == "event":
            subj = spec.subj
            text = self.fw["pron"][subj] if subj.__class__ is str else self.np(subj, "nom")
            body = self.clause(text, _agr(subj), subj, spec, "q" if question else "decl", neg)
        elif kind == "location":
            body = self.be_loc(spec, question)
        elif kind == "pred":
            body = self.pred(spec, neg, question)
        elif kind == "exist":
            body = self.exist(spec)
        else:
            body = self.complement(spec)
        return self.finish(body, question)

    def finish(self, body: str, question: bool) -> str:
        s = body[0].upper() + body[1:] if body[0].isalpha() else _cap(body)
        return s + "?" if question else s + "."

    def loc(self, place: str) -> str:
        """Place adverbial ('in the garden') for a place noun (memoized)."""
        s = self._locs.get(place)
        if s is None:
            s = self._locs[place] = self._loc(place)
        return s

    def subject(self, subj) -> str:
        return self.fw["pron"][subj] if isinstance(subj, str) else self.np(subj, "nom")

    def adv(self, spec: Spec) -> str:
        return ADVS[spec.adv][self.code] if spec.adv else ""

    def gender(self, subj) -> str:
        """Grammatical gender of a subject ('m', 'f', 'n')."""
        if isinstance(subj, str):
            return _agr(subj)[1]
        return NOUNS[subj.noun][self.code][0]

    def complement(self, spec: Spec) -> str:
        emb = spec.comp
        p = _agr(spec.subj)[0]
        inner = self.clause(self.np(emb.subj, "nom"), _agr(emb.subj), emb.subj, emb, "sub", False)
        return self.matrix(self.subject(spec.subj), self.present(VERBS[spec.verb][self.code], p), inner)

    def present(self, v: list, p: int) -> str:
        return v[p]

    def matrix(self, subj: str, verb: str, inner: str) -> str:
        return _join(subj, verb, self.fw["that"], inner)


class _En(_Lang):
    code = "en"

    def _np(self, np: NP, case: str = "nom") -> str:
        n = NOUNS[np.noun]["en"]
        words = ([ADJS[np.adj]["en"][0]] if np.adj else []) + [n[1] if np.plural else n[0]]
        if np.owner:
            det = self.np(np.owner) + "'s"
        elif np.det == "num":
            det = number_word(np.num, "en")
        elif np.det == "a":
            w = words[0]
            an = w[0] in "aeiou" and not w.startswith(tuple(self.fw["a_words"]))
            det = "an" if an else "a"
        elif np.det in ("the", "no"):
            det = np.det
        else:
            det = self.fw["poss"][np.det]
        s = _join(det, *words)
        if np.rel:
            s += " who " + self.clause("", _agr(np), None, np.rel, "rel", False)
        return s

    def _loc(self, place: str) -> str:
        return _join(NOUNS[place]["loc"]["en"], "the", NOUNS[place]["en"][0])

    def clause(self, subj, agr, _s, spec, mode, neg):
        p = agr[0]
        v = VERBS[spec.verb]["en"]
        rest = self.np(spec.obj) if spec.obj else self.loc(spec.place)
        past = spec.tense == "past"
        aux = "did" if past else self.fw["do"][p]
        if mode == "q":
            return _join(aux, subj, v[0], rest)
        verb = _join(aux, "not", v[0]) if neg else v[2] if past else v[1] if p == 1 else v[0]
        if mode == "sub":
            return _join(subj, verb, rest, self.adv(spec))
        return _join(self.adv(spec), subj, verb, rest)

    def be_loc(self, spec, q):
        be = self.fw["be_past" if spec.tense == "past" else "be"][_agr(spec.subj)[0]]
        s, l = self.subject(spec.subj), self.loc(spec.place)
        return _join(be, s, l) if q else _join(s, be, l)

    def pred(self, spec, neg, q):
        be = self.fw["be"][_agr(spec.subj)[0]]
        s, a = self.subject(spec.subj), ADJS[spec.adj]["en"][0]
        return _join(be, s, a) if q else _join(s, be, "not" if neg else "", a)

    def exist(self, spec):
        np = spec.subj
        return _join("there", "are" if np.plural else "is", self.np(np), self.loc(spec.place))

    def matrix(self, subj, verb, inner):
        return _join(subj, verb, "that", inner)

    def complement(self, spec):
        emb = spec.comp
        p = _agr(spec.subj)[0]
        inner = self.clause(self.np(emb.subj), _agr(emb.subj), emb.subj, emb, "sub", False)
        v = VERBS[spec.verb]["en"]
        return self.matrix(self.subject(spec.subj), v[1] if p == 1 else v[0], inner)


class _Germanic(_Lang):
    """German and Dutch: verb-second main clauses, verb-first questions, verb-final subordinate clauses."""

    obj_case = "acc"
    aux_first = False  # subordinate perfect: nl "heeft gelezen", de "gelesen hat"

    def present(self, v, p):
        return (v[0], v[1], v[2], v[2])[p]

    def forms(self, spec: Spec, subj_spec) -> list:
        return VERBS[spec.verb][self.code]

    def clause(self, subj, agr, subj_spec, spec, mode, neg):
        p = agr[0]
        v = self.forms(spec, subj_spec)
        sep = v[5] if len(v) > 5 else ""
        pres = self.present(v, p)
        no = self.fw["not"] if neg else ""
        mid = (self.np(spec.obj, self.obj_case), no) if spec.obj else (no, self.loc(spec.place))
        past = spec.tense == "past"
        fin = self.fw["aux"][v[4]][p] if past else pres
        right = v[3] if past else sep
        adv = self.adv(spec)
        if mode in ("sub", "rel"):
            tail = (_join(fin, v[3]) if self.aux_first else _join(v[3], fin)) if past else sep + pres
            return _join(subj, adv, *mid, tail)
        if mode == "q":
            return _join(fin, subj, *mid, right)
        if adv:
            return _join(adv, fin, subj, *mid, right)
        return _join(subj, fin, *mid, right)

    def be_loc(self, spec, q):
        be = self.fw["be_past" if spec.tense == "past" else "be"][_agr(spec.subj)[0]]
        s, l = self.subject(spec.subj), self.loc(spec.place)
        return _join(be, s, l) if q else _join(s, be, l)

    def pred(self, spec, neg, q):
        be = self.fw["be"][_agr(spec.subj)[0]]
        s, a = self.subject(spec.subj), ADJS[spec.adj][self.code][0]
        return _join(be, s, a) if q else _join(s, be, self.fw["not"] if neg else "", a)


class _De(_Germanic):
    code = "de"

    def noun(self, n: str, plural: bool, case: str) -> str:
        f = NOUNS[n]["de"]
        if plural:
            w = f[2]
            return w + "n" if case == "dat" and not w.endswith(("n", "s")) else w
        return f[3] if case == "gen" and len(f) > 3 else f[1]

    def _np(self, np: NP, case: str = "nom") -> str:
        f = NOUNS[np.noun]["de"]
        g = "pl" if np.plural else f[0]
        fw = self.fw
        if np.det == "the":
            det, decl = fw["def"][case][g], "weak"
        elif np.det == "num":
            one = fw["ein"]["a"] + fw["ein_ending"][case][g]
            det, decl = (one if np.num == 1 else number_word(np.num, "de")), "mixed"
        else:
            det, decl = fw["ein"][np.det] + fw["ein_ending"][case][g], "mixed"
        adj = ADJS[np.adj]["de"][1] + fw[decl][case][g] if np.adj else ""
        s = _join(det, adj, self.noun(np.noun, np.plural, case))
        if np.owner:
            s = _join(s, self.np(np.owner, "gen"))
        if np.rel:
            s += ", " + self.clause(fw["def"]["nom"][g], _agr(np), None, np.rel, "rel", False) + ","
        return s

    def _loc(self, place: str) -> str:
        prep = NOUNS[place]["loc"]["de"]
        art, _, rest = self.np(NP(place), "dat").partition(" ")
        short = self.fw["contract"].get(prep + " " + art)
        return _join(short, rest) if short else _join(prep, art, rest)

    def forms(self, spec, subj_spec):
        """Animals eat with 'fressen'."""
        d = VERBS[spec.verb]
        if "de_animal" in d and isinstance(subj_spec, NP) and "animal" in NOUNS[subj_spec.noun]["tags"]:
            return d["de_animal"]
        return d["de"]

    def exist(self, spec):
        np = spec.subj
        return _join(self.loc(spec.place), "sind" if np.plural else "ist", self.np(np, "nom"))

    def matrix(self, subj, verb, inner):
        return _join(subj, verb + ",", self.fw["that"], inner)


class _Nl(_Germanic):
    code = "nl"
    obj_case = "nom"
    aux_first = True

    def _np(self, np: NP, case: str = "nom") -> str:
        f = NOUNS[np.noun]["nl"]
        het = f[0] == "het" and not np.plural
        fw = self.fw
        inflect = True
        if np.det == "the":
            det = "het" if het else "de"
        elif np.det in ("a", "no"):
            det, inflect = fw[np.det], not het
        elif np.det == "num":
            det = number_word(np.num, "nl")
        else:
            det = fw["our_het"] if np.det == "our" and het else fw["poss"][np.det]
        adj = ADJS[np.adj]["nl"][1 if inflect else 2] if np.adj else ""
        s = _join(det, adj, f[2] if np.plural else f[1])
        if np.owner:
            s = _join(s, fw["of"], self.np(np.owner))
        if np.rel:
            s += " " + self.clause(fw["rel"]["het" if het else "de"], _agr(np), None, np.rel, "rel", False) + ","
        return s

    def _loc(self, place: str) -> str:
        return _join(NOUNS[place]["loc"]["nl"], self.np(NP(place)))

    def exist(self, spec):
        np = spec.subj
        return _join(self.fw["there"], "zijn" if np.plural else "is", self.np(np), self.loc(spec.place))


class _Romance(_Lang):
    """Shared helpers for fr/es/it/pt: adjective agreement and subject-verb-object order."""

    def adj_form(self, adj: str, g: str, plural: bool) -> str:
        return ADJS[adj][self.code][(1 if g == "f" else 0) + (2 if plural else 0)]

    def verb(self, v: list, p: int, past: bool, subj) -> str:
        return v[4 + p] if past else v[p]

    def clause(self, subj, agr, subj_spec, spec, mode, neg):
        v = VERBS[spec.verb][self.code]
        verb = self.verb(v, agr[0], spec.tense == "past", subj_spec)
        rest = self.object(spec.obj) if spec.obj else self.loc(spec.place)
        body = _join(self.cat(subj, self.negate(verb) if neg else verb), rest)
        if mode == "sub":
            return _join(body, self.adv(spec))
        return _join(self.adv(spec), body)

    def negate(self, verb: str) -> str:
        return _join(self.fw["not"], verb)

    def cat(self, a: str, b: str) -> str:
        return _join(a, b)

    def copula(self, p: int, past: bool, adj: str | None = None) -> str:
        """'to be' for a location (adj None) or a predicative adjective; es/pt choose ser or estar."""
        key = ("estar" if adj is None else ADJS[adj][self.code][4]) if "estar" in self.fw else "be"
        return self.fw[key + "_past" if past else key][p]

    def question(self, body: str) -> str:
        return body

    def be_loc(self, spec, q):
        be = self.copula(_agr(spec.subj)[0], spec.tense == "past")
        body = _join(self.subject(spec.subj), be, self.loc(spec.place))
        return self.question(body) if q else body

    def pred(self, spec, neg, q):
        agr = _agr(spec.subj)
        be = self.copula(agr[0], False, spec.adj)
        subj = spec.subj
        if isinstance(subj, NP):
            f = NOUNS[subj.noun][self.code]
            g = f[3] if subj.plural and len(f) > 3 else f[0]
        else:
            g = agr[1]
        body = _join(self.subject(subj), self.negate(be) if neg else be, self.adj_form(spec.adj, g, agr[2]))
        return self.question(body) if q else body

    def prep(self, prep: str, np: str) -> str:
        """Preposition + noun phrase with the language's contractions (fr au/du, es al/del, pt no/da/ao)."""
        art, _, rest = np.partition(" ")
        short = self.fw["contract"].get(prep + " " + art)
        return short + " " + rest if short else self.cat(prep, np)

    def object(self, np: NP) -> str:
        return self.np(np, "acc")

    def rel(self, np: NP) -> str:
        return self.fw["rel"] + " " + self.clause("", _agr(np), np, np.rel, "rel", False)

    def postmodify(self, s: str, np: NP) -> str:
        """Appends the owner ("of my brother") and the relative clause to a rendered noun phrase."""
        if np.owner:
            s = _join(s, self.prep(self.fw["of"], self.np(np.owner)))
        if np.rel:
            s = _join(s, self.rel(np))
        return s


class _Fr(_Romance):
    code = "fr"

    def _np(self, np: NP, case: str = "nom") -> str:
        f = NOUNS[np.noun]["fr"]
        g = f[0]
        noun = f[2] if np.plural else f[1]
        words = [noun]
        if np.adj:
            a = ADJS[np.adj]["fr"]
            form = self.adj_form(np.adj, g, np.plural)
            if len(a) > 4 and a[4] == "pre":
                if len(a) > 5 and g == "m" and not np.plural and _fr_vowel(noun):
                    form = a[5]
                words = [form, noun]
            else:
                words = [noun, form]
        fw = self.fw
        if np.det == "the":
            det = fw["def"]["pl" if np.plural else g]
        elif np.det == "a":
            det = fw["indef"][g]
        elif np.det == "num":
            det = number_word(np.num, "fr", g)
        elif np.det == "no":
            det = ""
        else:
            forms = fw["poss"][np.det]
            det = forms[2] if np.plural else forms[0] if g == "m" or _fr_vowel(words[0]) else forms[1]
        s = _fr_cat(det, " ".join(words))
        return self.postmodify(s, np)

    def _loc(self, place: str) -> str:
        return self.prep(NOUNS[place]["loc"]["fr"], self.np(NP(place)))

    def cat(self, a, b):
        return _fr_cat(a, b)

    def verb(self, v, p, past, subj):
        if not past:
            return v[p]
        aux = self.fw["aux"][v[5]][p]
        part = v[4]
        if v[5] == "e":
            part += ("e" if self.gender(subj) == "f" else "") + ("s" if _agr(subj)[2] else "")
        return aux + " " + part

    def negate(self, verb):
        fin, _, part = verb.partition(" ")
        return _join(_fr_cat("ne", fin), "pas", part)

    def clause(self, subj, agr, subj_spec, spec, mode, neg):
        body = super().clause(subj, agr, subj_spec, spec, "sub" if mode == "q" else mode, neg)
        return self.question(body) if mode == "q" else body

    def question(self, body):
        return _fr_cat(self.fw["question"], body)

    def exist(self, spec):
        np = spec.subj
        if np.det == "no":
            return _join(_fr_cat(self.fw["exist_neg"], self.np(np)), self.loc(spec.place))
        return _join(self.fw["exist"], self.np(np), self.loc(spec.place))

    def matrix(self, subj, verb, inner):
        return _fr_cat(_join(subj, verb, self.fw["that"]), inner)


_FR_VOWELS = frozenset("aeiouyhàâéèêëîïôûœ")
_FR_ELIDED = {"le": "l'", "la": "l'", "je": "j'", "ne": "n'", "que": "qu'", "de": "d'"}


def _fr_vowel(w: str) -> bool:
    return w[0].lower() in _FR_VOWELS


def _fr_cat(a: str, b: str) -> str:
    """Joins two French word sequences, eliding le/la/je/ne/que/de before a vowel or mute h."""
    if not a or not b:
        return a or b
    head, _, last = a.rpartition(" ")
    if last in _FR_ELIDED and b[0] in _FR_VOWELS and not b.startswith(("huit", "onze")):
        return (head + " " if head else "") + _FR_ELIDED[last] + b
    return a + " " + b


class _Es(_Romance):
    code = "es"

    def _np(self, np: NP, case: str = "nom") -> str:
        f = NOUNS[np.noun]["es"]
        g = f[0]
        fw = self.fw
        if np.det == "the":
            det = fw["def"][g + ("pl" if np.plural else "")]
        elif np.det == "a":
            det = fw["indef"][g]
        elif np.det == "no":
            det = fw["none"][g]
        elif np.det == "num":
            det = number_word(np.num, "es", g)
            if det.endswith("uno"):
                det = det[:-3] + ("ún" if det.endswith("veintiuno") else "un")
        elif np.det == "our":
            det = fw["poss"]["our"][(1 if g == "f" else 0) + (2 if np.plural else 0)]
        else:
            det = fw["poss"][np.det][1 if np.plural else 0]
        s = _join(det, f[2] if np.plural else f[1], self.adj_form(np.adj, g, np.plural) if np.adj else "")
        return self.postmodify(s, np)

    def _loc(self, place: str) -> str:
        return _join(NOUNS[place]["loc"]["es"], self.np(NP(place)))

    def object(self, np):
        """Specific animate objects take the personal 'a' (al perro, a mi gato)."""
        s = self.np(np, "acc")
        return self.prep("a", s) if np.det not in ("a", "num") and "animal" in NOUNS[np.noun]["tags"] else s

    def exist(self, spec):
        np = spec.subj
        ex = self.negate(self.fw["exist"]) if np.det == "no" else self.fw["exist"]
        return _join(ex, self.np(np), self.loc(spec.place))

    def finish(self, body, question):
        s = _cap(body)
        return "¿" + s + "?" if question else s + "."


_IT_VOWEL = "aeiouàèéìòù"


def _it_article(kind: str, g: str, plural: bool, word: str) -> str:
    w = word.lower()
    vowel = w[0] in _IT_VOWEL
    strong = w.startswith(("z", "gn", "ps", "pn", "x", "y")) or (w[0] == "s" and len(w) > 1 and w[1] not in _IT_VOWEL)
    if kind == "def":
        if plural:
            return ("gli" if vowel or strong else "i") if g == "m" else "le"
        if g == "m":
            return "l'" if vowel else "lo" if strong else "il"
        return "l'" if vowel else "la"
    base = "un" if kind == "a" else "nessun"
    if g == "m":
        return base + "o" if strong else base
    return base + "'" if vowel else base + "a"


class _It(_Romance):
    code = "it"

    def _np(self, np: NP, case: str = "nom") -> str:
        f = NOUNS[np.noun]["it"]
        g = f[3] if np.plural and len(f) > 3 else f[0]
        noun = f[2] if np.plural else f[1]
        words = [noun] + ([self.adj_form(np.adj, g, np.plural)] if np.adj else [])
        fw = self.fw
        det = np.det
        if det in POSS:
            words.insert(0, fw["poss"][det][(1 if g == "f" else 0) + (2 if np.plural else 0)])
            kin_bare = "kin" in NOUNS[np.noun]["tags"] and not np.plural and det != "their" and not np.adj
            det = "" if kin_bare else "the"
        if det in ("the", "a", "no"):
            art = _it_article({"the": "def", "a": "a", "no": "no"}[det], g, np.plural, words[0])
        elif det == "num":
            art = number_word(np.num, "it") if np.num > 1 else _it_article("a", g, False, words[0])
        else:
            art = ""
        s = art + " ".join(words) if art.endswith("'") else _join(art, *words)
        return self.postmodify(s, np)

    def _loc(self, place: str) -> str:
        prep = NOUNS[place]["loc"]["it"]
        if prep.endswith("+"):
            return self.prep(prep[:-1], self.np(NP(place)))
        return _join(prep, NOUNS[place]["it"][1])

    def prep(self, prep: str, np: str) -> str:
        """Preposition + noun phrase with the articulated prepositions (di + il → del, in + l' → nell')."""
        table = self.fw["contract"][prep]
        if np.startswith("l'"):
            return table["l'"] + np[2:]
        art, _, rest = np.partition(" ")
        return table[art] + " " + rest if art in table else prep + " " + np

    def verb(self, v, p, past, subj):
        if not past:
            return v[p]
        part = v[4]
        if v[5] == "e":
            plural = _agr(subj)[2]
            part = part[:-1] + (("e" if plural else "a") if self.gender(subj) == "f" else ("i" if plural else "o"))
        return self.fw["aux"][v[5]][p] + " " + part

    def exist(self, spec):
        np = spec.subj
        ex = self.fw["exist"][1 if np.plural else 0]
        return _join(self.negate(ex) if np.det == "no" else ex, self.np(np), self.loc(spec.place))


class _Pt(_Romance):
    code = "pt"

    def _np(self, np: NP, case: str = "nom") -> str:
        f = NOUNS[np.noun]["pt"]
        g = f[0]
        fw = self.fw
        idx = (1 if g == "f" else 0) + (2 if np.plural else 0)
        words = [f[2] if np.plural else f[1]] + ([self.adj_form(np.adj, g, np.plural)] if np.adj else [])
        if np.det in ("the", "my", "his", "her", "our", "their"):
            det = fw["def"][g + ("pl" if np.plural else "")]
            if np.det in fw["poss"]:
                words.insert(0, fw["poss"][np.det][idx])
            elif np.det != "the":
                words.append(fw["poss_after"][np.det])
        elif np.det == "a":
            det = fw["indef"][g]
        elif np.det == "no":
            det = fw["none"][g]
        else:
            det = number_word(np.num, "pt", g)
        s = _join(det, *words)
        return self.postmodify(s, np)

    def _loc(self, place: str) -> str:
        return self.prep(NOUNS[place]["loc"]["pt"], self.np(NP(place)))

    def exist(self, spec):
        np = spec.subj
        ex = self.negate(self.fw["exist"]) if np.det == "no" else self.fw["exist"]
        return _join(ex, self.np(np), self.loc(spec.place))


class _Ro(_Lang):
    code = "ro"

    @staticmethod
    def genders(n: str) -> tuple:
        g = NOUNS[n]["ro"][0]
        return ("f" if g == "f" else "m"), ("m" if g == "m" else "f")

    def _np(self, np: NP, case: str = "nom") -> str:
        f = NOUNS[np.noun]["ro"]
        g_sg, g_pl = self.genders(np.noun)
        g = g_pl if np.plural else g_sg
        idx = (1 if g == "f" else 0) + (2 if np.plural else 0)
        adj = ADJS[np.adj]["ro"][idx] if np.adj else ""
        fw = self.fw
        if case == "gen":
            poss = fw["poss_gen"][np.det][1 if g == "f" else 0] if np.det in fw["poss_gen"] else ""
            return _join(f[5], poss)
        if np.det == "the":
            s = _join(f[4] if np.plural else f[2], adj)
        elif np.det in POSS:
            s = _join(f[4] if np.plural else f[2], fw["poss"][np.det][idx], adj)
        elif np.det in ("a", "no"):
            s = _join(fw["indef" if np.det == "a" else "none"][g_sg], f[1], adj)
        else:
            if np.num == 1:
                s = _join(fw["indef"][g_sg], f[1])
            else:
                w = number_word(np.num, "ro", f[0])
                de = fw["numeral_de"] if np.num % 100 >= 20 else ""
                s = _join(w, de, f[3])
        if np.owner:
            s = _join(s, self.np(np.owner, "gen"))
        if np.rel:
            s = _join(s, fw["rel"], self.clause("", _agr(np), np, np.rel, "rel", False))
        return s

    def _loc(self, place: str) -> str:
        return _join(NOUNS[place]["loc"]["ro"], NOUNS[place]["ro"][1])

    def clause(self, subj, agr, subj_spec, spec, mode, neg):
        v = VERBS[spec.verb]["ro"]
        p = agr[0]
        if spec.tense == "past":
            verb = v[4].split(";")[p] if ";" in v[4] else self.fw["aux"][p] + " " + v[4]
        else:
            verb = v[p]
        rest = self.np(spec.obj) if spec.obj else self.loc(spec.place)
        body = _join(subj, _join(self.fw["not"], verb) if neg else verb, rest)
        return _join(body, self.adv(spec)) if mode == "sub" else _join(self.adv(spec), body)

    def adj_agr(self, subj, adj: str) -> str:
        agr = _agr(subj)
        if isinstance(subj, NP):
            g_sg, g_pl = self.genders(subj.noun)
            g = g_pl if subj.plural else g_sg
        else:
            g = agr[1]
        return ADJS[adj]["ro"][(1 if g == "f" else 0) + (2 if agr[2] else 0)]

    def be_loc(self, spec, q):
        be = self.fw["be_past" if spec.tense == "past" else "be"][_agr(spec.subj)[0]]
        return _join(self.subject(spec.subj), be, self.loc(spec.place))

    def pred(self, spec, neg, q):
        be = self.fw["be"][_agr(spec.subj)[0]]
        return _join(self.subject(spec.subj), self.fw["not"] if neg else "", be, self.adj_agr(spec.subj, spec.adj))

    def exist(self, spec):
        np = spec.subj
        be = self.fw["be"][3 if np.plural else 1]
        return _join(self.loc(spec.place), self.fw["not"] if np.det == "no" else "", be, self.np(np))


class _Ru(_Lang):
    code = "ru"

    @staticmethod
    def adj_stem(m: str) -> tuple:
        stem, end = m[:-2], m[-2:]
        if end == "ый":
            return stem, "hard"
        if end == "ой":
            return stem, "stressed_velar" if stem[-1] in "гкхжшчщ" else "stressed"
        return stem, "velar" if stem[-1] in "гкх" else "sibilant" if stem[-1] in "жшчщ" else "soft"

    def decline(self, table: dict, stem: str, case: str, key: str, anim: bool) -> str:
        if case == "acc":
            if key == "f":
                return stem + table["acc_f"]
            case = "gen" if anim and key in ("m", "pl") else "nom"
        return stem + table[case][key]

    def adj(self, adj: str, case: str, key: str, anim: bool) -> str:
        stem, cls = self.adj_stem(ADJS[adj]["ru"][0])
        return self.decline(self.fw["adj_endings"][cls], stem, case, key, anim)

    def _np(self, np: NP, case: str = "nom") -> str:
        f = NOUNS[np.noun]["ru"]
        anim = f[1] == "a"
        key = "pl" if np.plural else f[0]
        fw = self.fw
        if np.det == "num":
            s = _ru_num_phrase(np.num, f, "nom" if case == "nom" else "acc")
        else:
            if np.plural:
                noun = {"nom": f[5], "gen": f[6], "acc": f[6] if anim else f[5]}[case]
            else:
                noun = {"nom": f[2], "gen": f[4], "acc": f[3]}[case]
            det = ""
            if np.det in POSS:
                p = fw["poss"][np.det]
                det = p if isinstance(p, str) else self.decline(p, "", case, key, anim)
            s = _join(det, self.adj(np.adj, case, key, anim) if np.adj else "", noun)
        if np.owner:
            s = _join(s, self.np(np.owner, "gen"))
        if np.rel:
            rel = self.decline(fw["adj_endings"]["hard"], fw["rel"][:-2], "nom", key, True)
            s += ", " + self.clause(rel, _agr(np), np, np.rel, "rel", False) + ","
        return s

    def _loc(self, place: str) -> str:
        return NOUNS[place]["loc"]["ru"]

    def past_key(self, subj) -> str:
        return "pl" if _agr(subj)[2] else self.gender(subj)

    def clause(self, subj, agr, subj_spec, spec, mode, neg):
        v = VERBS[spec.verb]["ru"]
        if spec.tense == "past":
            verb = v[4 + ("m", "f", "n", "pl").index(self.past_key(subj_spec))]
        else:
            verb = v[agr[0]]
        rest = self.np(spec.obj, "acc") if spec.obj else self.loc(spec.place)
        return _join(self.adv(spec), subj, _join(self.fw["not"], verb) if neg else verb, rest)

    def be_loc(self, spec, q):
        be = self.fw["be_past"][self.past_key(spec.subj)] if spec.tense == "past" else ""
        return _join(self.subject(spec.subj), be, self.loc(spec.place))

    def pred(self, spec, neg, q):
        a = ADJS[spec.adj]["ru"]
        key = self.past_key(spec.subj)
        form = a[1 + ("m", "f", "n", "pl").index(key)] if len(a) > 1 else self.adj(spec.adj, "nom", key, False)
        return _join(self.subject(spec.subj), self.fw["not"] if neg else "", form)

    def exist(self, spec):
        np = spec.subj
        if np.det == "no":
            return _join(self.loc(spec.place), self.fw["exist_neg"], self.np(np, "gen"))
        if np.det == "num":
            return _join(self.loc(spec.place), self.np(np))
        return _join(self.loc(spec.place), self.fw["exist"], self.np(np))

    def matrix(self, subj, verb, inner):
        return _join(subj, verb + ",", self.fw["that"], inner)


_RENDERERS = {c.code: c() for c in (_En, _De, _Es, _Fr, _It, _Nl, _Pt, _Ro, _Ru)}


def render(spec: Spec, lang: str) -> str:
    """Renders a sentence spec in one language: capitalized, with final '.' or '?'."""
    return _RENDERERS[lang].render(spec)


# ------------------------------------------------------------------------------------------------- spec space


class _List:
    """Uniform choice among explicit values."""

    def __init__(self, values):
        self.values = list(values)
        self.n = len(self.values)

    def draw(self, rng: random.Random):
        return self.values[int(rng.random() * self.n)]


class _Product:
    """All combinations of independent options, combined by `build`."""

    def __init__(self, build, *options):
        self.build, self.options = build, options
        self.n = 1
        for o in options:
            self.n *= o.n

    def draw(self, rng):
        opts = self.options
        if len(opts) == 1:
            return self.build(opts[0].draw(rng))
        if len(opts) == 2:
            return self.build(opts[0].draw(rng), opts[1].draw(rng))
        return self.build(*[o.draw(rng) for o in opts])


class _Union:
    """Disjoint union; draws are uniform over all members."""

    def __init__(self, members):
        self.members = [m for m in members if m.n]
        self.cum, total = [], 0
        for m in self.members:
            total += m.n
            self.cum.append(total)
        self.n = total

    def draw(self, rng):
        return self.members[bisect.bisect_right(self.cum, int(rng.random() * self.n))].draw(rng)


_PRESENT_ADVS = [a for a, d in ADVS.items() if d["tense"] == "present"]
_PAST_ADVS = [a for a, d in ADVS.items() if d["tense"] == "past"]
_PLACES = [n for n, d in NOUNS.items() if "place" in d["tags"]]
_TIMES = {
    "statement": [("present", None)] + [("present", a) for a in _PRESENT_ADVS] + [("past", a) for a in _PAST_ADVS],
    "plain": [("present", None), ("past", None)],
    "present": [("present", None)],
    "present_adv": [("present", None)] + [("present", a) for a in _PRESENT_ADVS],
    "embedded": [("present", None)] + [("past", a) for a in _PAST_ADVS],
}
# Possessives that would corefer with the subject (Russian "свой") are excluded from objects.
_OBJ_EXCLUDE = {"I": {"my"}, "we": {"our"}, "3": {"his", "her", "their"}}


def _nouns(tags, excl=frozenset()) -> list:
    return [n for n in NOUNS if _match(frozenset(tags), frozenset(excl), n)]


def _subject_nps(nouns, place=None, adjectives=True) -> _Union:
    parts = []
    for n in nouns:
        if place and not _located(n, place):
            continue
        dets = _dets(n)
        adjs = [None] + list(_adjs(n, "attr")) if adjectives else [None]
        parts.append(_Product(lambda dp, a, n=n: NP(n, dp[0], dp[1], a),
                              _List((d, p) for d in dets for p in _nums(n)), _List(adjs)))
    return _Union(parts)


def _object_nps(verb: str, group: str, indefinite=True) -> _Union:
    d = VERBS[verb]
    parts = []
    for n in NOUNS:
        if not _match(d["obj"], d["not"], n):
            continue
        dets = [(x, p) for x in _dets(n) if x not in _OBJ_EXCLUDE[group] for p in _nums(n)]
        if indefinite and _countable(n):
            dets.append(("a", False))
        parts.append(_Product(lambda dp, a, n=n: NP(n, dp[0], dp[1], a), _List(dets), _List([None, *_adjs(n, "attr")])))
    return _Union(parts)


def _counted_nps(verb: str) -> _Union:
    d = VERBS[verb]
    nouns = [n for n in NOUNS if _match(d["obj"], d["not"], n) and _countable(n) and "place" not in NOUNS[n]["tags"]]
    return _Union([_Product(lambda k, n=n: NP(n, "num", k > 1, None, k), _List(range(1, 100))) for n in nouns])


def _kinds(verb: str) -> list:
    return _nouns(VERBS[verb]["subj"])


def _subject_groups(pronouns, nps, times: dict) -> list:
    """(group, subject options, time options): pronoun groups per coreference class plus noun-phrase subjects."""
    out = []
    for group, prons in (("I", ["I"]), ("we", ["we"]), ("3", ["he", "she", "they"])):
        prons = [p for p in prons if p in pronouns]
        if prons:
            out.append((group, _List(prons), _List(times["I" if group == "I" else "other"])))
    if nps is not None and nps.n:
        out.append(("3", nps, _List(times["other"])))
    return out


def _event_patterns() -> dict:
    trans = [v for v, d in VERBS.items() if d["kind"] == "trans"]
    intr = [v for v, d in VERBS.items() if d["kind"] == "intr"]
    stmt = {"I": _TIMES["present_adv"], "other": _TIMES["statement"]}
    plain = {"I": _TIMES["present"], "other": _TIMES["plain"]}
    out = {}

    def event(pattern, verbs, pronouns, times, obj=None, place_of=None, humans_only=False):
        parts = []
        for v in verbs:
            places = [None] if place_of is None else place_of(v)
            for place in places:
                kinds = [n for n in _kinds(v) if not humans_only or "human" in NOUNS[n]["tags"]]
                nps = _subject_nps(kinds, place)
                for group, subj, time in _subject_groups(pronouns, nps, times):
                    rest = obj(v, group) if obj else _List([place])
                    key = "obj" if obj else "place"
                    parts.append(_Product(
                        lambda s, t, r, v=v, key=key: Spec(pattern, subj=s, verb=v, tense=t[0], adv=t[1], **{key: r}),
                        subj, time, rest))
        out[pattern] = _Union(parts)

    places_of = lambda v: _PLACES if "*" in VERBS[v]["places"] else [p for p in _PLACES if p in VERBS[v]["places"]]
    event("transitive", trans, PRONOUNS, stmt, obj=lambda v, g: _object_nps(v, g))
    event("transitive_question", trans, ("he", "she", "they"), plain, obj=lambda v, g: _object_nps(v, g))
    event("transitive_negation", trans, PRONOUNS, plain, obj=lambda v, g: _object_nps(v, g, indefinite=False))
    event("intransitive", intr, PRONOUNS, stmt, place_of=places_of)
    event("intransitive_question", intr, ("he", "she", "they"), plain, place_of=places_of)
    event("intransitive_negation", intr, PRONOUNS, plain, place_of=places_of)
    event("counted_objects", [v for v in trans if VERBS[v]["count"]], PRONOUNS, stmt, obj=lambda v, g: _counted_nps(v),
          humans_only=True)
    return out


def _other_patterns() -> dict:
    out = {}
    located = [n for n in NOUNS if NOUNS[n]["at"] and "kin" not in NOUNS[n]["tags"] and _countable(n)]
    out["existential_indefinite"] = _Union([
        _Product(lambda a, p=p, n=n: Spec("existential_indefinite", subj=NP(n, "a", False, a), place=p),
                 _List(_adjs(n, "attr")))
        for p in _PLACES for n in located if _located(n, p)])
    out["existential_number"] = _Union([
        _Product(lambda k, p=p, n=n: Spec("existential_number", subj=NP(n, "num", True, None, k), place=p),
                 _List(range(2, 100)))
        for p in _PLACES for n in located if _located(n, p)])
    out["existential_negative"] = _Union([
        _List([Spec("existential_negative", subj=NP(n, "no"), place=p)])
        for p in _PLACES for n in located if _located(n, p)])

    loc_times = {"I": _TIMES["present"], "other": _TIMES["plain"]}
    for pattern, prons in (("location", PRONOUNS), ("location_question", ("he", "she", "they"))):
        parts = []
        for p in _PLACES:
            nps = _subject_nps([n for n in NOUNS if NOUNS[n]["at"]], p)
            for _, subj, time in _subject_groups(prons, nps, loc_times):
                parts.append(_Product(lambda s, t, p=p, pat=pattern: Spec(pat, subj=s, place=p, tense=t[0]),
                                      subj, time))
        out[pattern] = _Union(parts)

    human_adjs = _List(_adjs("man", "pred"))
    for pattern, prons in (("predicative", ("he", "she", "we", "they")),
                           ("predicative_negation", ("he", "she", "we", "they")),
                           ("predicative_question", ("he", "she", "they"))):
        parts = [_Product(lambda s, a, pat=pattern: Spec(pat, subj=s, adj=a), _List(prons), human_adjs)]
        for n in NOUNS:
            adjs = _adjs(n, "pred")
            if adjs:
                nps = _subject_nps([n], adjectives=False)
                parts.append(_Product(lambda s, a, pat=pattern: Spec(pat, subj=s, adj=a), nps, _List(adjs)))
        out[pattern] = _Union(parts)

    owners = _List(NP(o, d) for o in _nouns({"human"}) for d in _dets(o) if d in ("the", "my", "our"))
    out["possessive"] = _Union([
        _Product(lambda o, pl, a, n=n: Spec("possessive", subj=NP(n, "the", pl, owner=o), adj=a),
                 owners, _List(_nums(n)), _List(_adjs(n, "pred")))
        for n in _nouns({"ownable"}) if _adjs(n, "pred")])

    trans = [v for v, d in VERBS.items() if d["kind"] == "trans" and "human" in d["subj"]]
    rel_vp = _Union([_Product(lambda o, v=v: (v, o), _object_nps(v, "3")) for v in trans])
    parts = []
    for n in _nouns({"human"}, {"kin"}):
        main_vp = _List((v, p) for v, d in VERBS.items() if d["kind"] == "intr" and _match(d["subj"], frozenset(), n)
                        for p in _PLACES if "*" in d["places"] or p in d["places"])
        parts.append(_Product(
            lambda pl, r, m, n=n: Spec("relative_clause", subj=NP(n, "the", pl, rel=Spec("rel", verb=r[0], obj=r[1])),
                                       verb=m[0], place=m[1]),
            _List(_nums(n)), rel_vp, main_vp))
    out["relative_clause"] = _Union(parts)

    embedded = _Union([
        _Product(lambda s, o, t, v=v: Spec("clause", subj=s, verb=v, obj=o, tense=t[0], adv=t[1]),
                 _subject_nps(_kinds(v)), _object_nps(v, "3"), _List(_TIMES["embedded"]))
        for v, d in VERBS.items() if d["kind"] == "trans"])
    out["complement_clause"] = _Product(
        lambda s, v, c: Spec("complement_clause", subj=s, verb=v, comp=c),
        _List(PRONOUNS), _List(v for v, d in VERBS.items() if d["kind"] == "matrix"), embedded)
    return out


@lru_cache(maxsize=1)
def _space() -> dict:
    return {**_event_patterns(), **_other_patterns()}


def pattern_counts() -> dict:
    """Number of distinct sentences per pattern."""
    space = _space()
    return {p: space[p].n for p in PATTERNS}


def num_distinct_sentences() -> int:
    """Total number of distinct sentences the generator can produce (counted, not enumerated)."""
    return sum(pattern_counts().values())


def sample_sentences(n: int, seed: int, exclude: set[str] | None = None) -> list[Sentence]:
    """`n` distinct sentences, deterministic in (`n`, `seed`); ids in `exclude` are skipped.

    Patterns are drawn with equal weight except that a pattern is never asked for more than about half of its
    sentences; within a pattern every sentence is equally likely.
    """
    space = _space()
    share = max(1.0, 2.0 * n / len(PATTERNS))
    cum, total = [], 0.0
    for p in PATTERNS:
        total += min(1.0, space[p].n / share)
        cum.append(total)
    renderers = [(lang, _RENDERERS[lang].render) for lang in LANGS]
    rng = random.Random(seed)
    exclude = exclude or set()
    seen: set[str] = set()
    out: list[Sentence] = []
    misses = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # only acyclic objects are created; collection passes over them cost a third of the run time
    try:
        while len(out) < n:
            pattern = PATTERNS[bisect.bisect_right(cum, rng.random() * total)]
            spec = space[pattern].draw(rng)
            sid = spec_id(spec)
            if sid in seen or sid in exclude:
                misses += 1
                if misses > 100 * n + 10_000:
                    raise ValueError(f"could not draw {n} distinct sentences")
                continue
            seen.add(sid)
            out.append(Sentence(sid, pattern, {lang: r(spec) for lang, r in renderers}))
    finally:
        if gc_was_enabled:
            gc.enable()
    return out
