"""The spec space: a union of disjoint products per pattern, counted exactly and sampled uniformly."""
from __future__ import annotations

import bisect
import gc
import random
from functools import lru_cache

from mlst_jax.data.synthetic.grammar.languages import _RENDERERS
from mlst_jax.data.synthetic.grammar.lexicon import (ADVS, LANGS, NOUNS, PRONOUNS, VERBS, _adjs, _countable, _dets,
                                                     _located, _match, _nums)
from mlst_jax.data.synthetic.grammar.specs import NP, PATTERNS, Sentence, Spec, spec_id


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
