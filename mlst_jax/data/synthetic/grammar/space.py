"""The spec space: a union of disjoint products per pattern, counted exactly and sampled uniformly."""
from __future__ import annotations

import bisect
import gc
import random
from functools import lru_cache

from mlst_jax.data.synthetic.grammar.languages import _RENDERERS
from mlst_jax.data.synthetic.grammar.lexicon import (ADVS, LANGS, NOUNS, PRONOUNS, VERBS, _adjs, _countable, _dets,
                                                     _located, _match, _nums, lexicon_subset)
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
_TIMES = {
    "statement": [("present", None)] + [("present", a) for a in _PRESENT_ADVS] + [("past", a) for a in _PAST_ADVS],
    "plain": [("present", None), ("past", None)],
    "present": [("present", None)],
    "present_adv": [("present", None)] + [("present", a) for a in _PRESENT_ADVS],
    "embedded": [("present", None)] + [("past", a) for a in _PAST_ADVS],
}
# Possessives that would corefer with the subject (Russian "свой") are excluded from objects.
_OBJ_EXCLUDE = {"I": {"my"}, "we": {"our"}, "3": {"his", "her", "their"}}


class _Words:
    """The words a space draws on: a lexicon subset (:func:`lexicon_subset`), in the lexicon files' order."""

    def __init__(self, name: str):
        sub = lexicon_subset(name)
        self.nouns = [n for n in NOUNS if n in sub.nouns]
        self.verbs = {v: d for v, d in VERBS.items() if v in sub.verbs}
        self.adjectives = sub.adjectives
        self.places = [n for n in self.nouns if "place" in NOUNS[n]["tags"]]
        self.max_number = sub.max_number

    def nouns_of(self, tags, excl=frozenset()) -> list:
        return [n for n in self.nouns if _match(frozenset(tags), frozenset(excl), n)]

    def adjs(self, noun: str, use: str) -> tuple:
        return tuple(a for a in _adjs(noun, use) if a in self.adjectives)

    def verbs_of(self, kind: str) -> list:
        return [v for v, d in self.verbs.items() if d["kind"] == kind]


def _subject_nps(w: _Words, nouns, place=None, adjectives=True) -> _Union:
    parts = []
    for n in nouns:
        if place and not _located(n, place):
            continue
        dets = _dets(n)
        adjs = [None] + list(w.adjs(n, "attr")) if adjectives else [None]
        parts.append(_Product(lambda dp, a, n=n: NP(n, dp[0], dp[1], a),
                              _List((d, p) for d in dets for p in _nums(n)), _List(adjs)))
    return _Union(parts)


def _object_nps(w: _Words, verb: str, group: str, indefinite=True) -> _Union:
    d = VERBS[verb]
    parts = []
    for n in w.nouns:
        if not _match(d["obj"], d["not"], n):
            continue
        dets = [(x, p) for x in _dets(n) if x not in _OBJ_EXCLUDE[group] for p in _nums(n)]
        if indefinite and _countable(n):
            dets.append(("a", False))
        parts.append(_Product(lambda dp, a, n=n: NP(n, dp[0], dp[1], a), _List(dets),
                              _List([None, *w.adjs(n, "attr")])))
    return _Union(parts)


def _counted_nps(w: _Words, verb: str) -> _Union:
    d = VERBS[verb]
    nouns = [n for n in w.nouns if _match(d["obj"], d["not"], n) and _countable(n) and "place" not in NOUNS[n]["tags"]]
    counts = _List(range(1, w.max_number + 1))
    return _Union([_Product(lambda k, n=n: NP(n, "num", k > 1, None, k), counts) for n in nouns])


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


def _event_patterns(w: _Words) -> dict:
    trans, intr = w.verbs_of("trans"), w.verbs_of("intr")
    stmt = {"I": _TIMES["present_adv"], "other": _TIMES["statement"]}
    plain = {"I": _TIMES["present"], "other": _TIMES["plain"]}
    out = {}

    def event(pattern, verbs, pronouns, times, obj=None, place_of=None, humans_only=False):
        parts = []
        for v in verbs:
            places = [None] if place_of is None else place_of(v)
            for place in places:
                kinds = [n for n in w.nouns_of(VERBS[v]["subj"]) if not humans_only or "human" in NOUNS[n]["tags"]]
                nps = _subject_nps(w, kinds, place)
                for group, subj, time in _subject_groups(pronouns, nps, times):
                    rest = obj(v, group) if obj else _List([place])
                    key = "obj" if obj else "place"
                    parts.append(_Product(
                        lambda s, t, r, v=v, key=key: Spec(pattern, subj=s, verb=v, tense=t[0], adv=t[1], **{key: r}),
                        subj, time, rest))
        out[pattern] = _Union(parts)

    places_of = lambda v: [p for p in w.places if "*" in VERBS[v]["places"] or p in VERBS[v]["places"]]
    event("transitive", trans, PRONOUNS, stmt, obj=lambda v, g: _object_nps(w, v, g))
    event("transitive_question", trans, ("he", "she", "they"), plain, obj=lambda v, g: _object_nps(w, v, g))
    event("transitive_negation", trans, PRONOUNS, plain, obj=lambda v, g: _object_nps(w, v, g, indefinite=False))
    event("intransitive", intr, PRONOUNS, stmt, place_of=places_of)
    event("intransitive_question", intr, ("he", "she", "they"), plain, place_of=places_of)
    event("intransitive_negation", intr, PRONOUNS, plain, place_of=places_of)
    event("counted_objects", [v for v in trans if VERBS[v]["count"]], PRONOUNS, stmt,
          obj=lambda v, g: _counted_nps(w, v),
          humans_only=True)
    return out


def _other_patterns(w: _Words) -> dict:
    out = {}
    located = [n for n in w.nouns if NOUNS[n]["at"] and "kin" not in NOUNS[n]["tags"] and _countable(n)]
    out["existential_indefinite"] = _Union([
        _Product(lambda a, p=p, n=n: Spec("existential_indefinite", subj=NP(n, "a", False, a), place=p),
                 _List(w.adjs(n, "attr")))
        for p in w.places for n in located if _located(n, p)])
    out["existential_number"] = _Union([
        _Product(lambda k, p=p, n=n: Spec("existential_number", subj=NP(n, "num", True, None, k), place=p),
                 _List(range(2, w.max_number + 1)))
        for p in w.places for n in located if _located(n, p)])
    out["existential_negative"] = _Union([
        _List([Spec("existential_negative", subj=NP(n, "no"), place=p)])
        for p in w.places for n in located if _located(n, p)])

    loc_times = {"I": _TIMES["present"], "other": _TIMES["plain"]}
    for pattern, prons in (("location", PRONOUNS), ("location_question", ("he", "she", "they"))):
        parts = []
        for p in w.places:
            nps = _subject_nps(w, [n for n in w.nouns if NOUNS[n]["at"]], p)
            for _, subj, time in _subject_groups(prons, nps, loc_times):
                parts.append(_Product(lambda s, t, p=p, pat=pattern: Spec(pat, subj=s, place=p, tense=t[0]),
                                      subj, time))
        out[pattern] = _Union(parts)

    human_adjs = _List(w.adjs("man", "pred"))
    for pattern, prons in (("predicative", ("he", "she", "we", "they")),
                           ("predicative_negation", ("he", "she", "we", "they")),
                           ("predicative_question", ("he", "she", "they"))):
        parts = [_Product(lambda s, a, pat=pattern: Spec(pat, subj=s, adj=a), _List(prons), human_adjs)]
        for n in w.nouns:
            adjs = w.adjs(n, "pred")
            if adjs:
                nps = _subject_nps(w, [n], adjectives=False)
                parts.append(_Product(lambda s, a, pat=pattern: Spec(pat, subj=s, adj=a), nps, _List(adjs)))
        out[pattern] = _Union(parts)

    owners = _List(NP(o, d) for o in w.nouns_of({"human"}) for d in _dets(o) if d in ("the", "my", "our"))
    out["possessive"] = _Union([
        _Product(lambda o, pl, a, n=n: Spec("possessive", subj=NP(n, "the", pl, owner=o), adj=a),
                 owners, _List(_nums(n)), _List(w.adjs(n, "pred")))
        for n in w.nouns_of({"ownable"}) if w.adjs(n, "pred")])

    trans = [v for v in w.verbs_of("trans") if "human" in VERBS[v]["subj"]]
    rel_vp = _Union([_Product(lambda o, v=v: (v, o), _object_nps(w, v, "3")) for v in trans])
    parts = []
    for n in w.nouns_of({"human"}, {"kin"}):
        main_vp = _List((v, p) for v in w.verbs_of("intr") if _match(VERBS[v]["subj"], frozenset(), n)
                        for p in w.places if "*" in VERBS[v]["places"] or p in VERBS[v]["places"])
        parts.append(_Product(
            lambda pl, r, m, n=n: Spec("relative_clause", subj=NP(n, "the", pl, rel=Spec("rel", verb=r[0], obj=r[1])),
                                       verb=m[0], place=m[1]),
            _List(_nums(n)), rel_vp, main_vp))
    out["relative_clause"] = _Union(parts)

    embedded = _Union([
        _Product(lambda s, o, t, v=v: Spec("clause", subj=s, verb=v, obj=o, tense=t[0], adv=t[1]),
                 _subject_nps(w, w.nouns_of(VERBS[v]["subj"])), _object_nps(w, v, "3"), _List(_TIMES["embedded"]))
        for v in w.verbs_of("trans")])
    out["complement_clause"] = _Product(
        lambda s, v, c: Spec("complement_clause", subj=s, verb=v, comp=c),
        _List(PRONOUNS), _List(w.verbs_of("matrix")), embedded)
    return out


@lru_cache(maxsize=2)
def _space(lexicon: str = "full") -> dict:
    w = _Words(lexicon)
    space = {**_event_patterns(w), **_other_patterns(w)}
    empty = [p for p in PATTERNS if not space[p].n]
    if empty:
        raise ValueError(f"lexicon subset {lexicon!r} leaves no sentence for pattern(s) {', '.join(empty)}")
    return space


def pattern_counts(lexicon: str = "full") -> dict:
    """Number of distinct sentences per pattern drawn from the `lexicon` subset (:func:`lexicon_subset`)."""
    space = _space(lexicon)
    return {p: space[p].n for p in PATTERNS}


def num_distinct_sentences(lexicon: str = "full") -> int:
    """Total number of distinct sentences the generator can produce (counted, not enumerated)."""
    return sum(pattern_counts(lexicon).values())


def sample_sentences(n: int, seed: int, exclude: set[str] | None = None, lexicon: str = "full",
                     max_words: int | None = None) -> list[Sentence]:
    """`n` distinct sentences, deterministic in (`n`, `seed`, `lexicon`, `max_words`); ids in `exclude` are skipped.

    Patterns are drawn with equal weight except that a pattern is never asked for more than about half of its
    sentences; within a pattern every sentence is equally likely. `lexicon` names the subset of the lexicon the
    sentences use (``"full"`` or ``"demo"``, see :func:`lexicon_subset`). `max_words` keeps only sentences of at
    most that many English words (drawn sentences above it are skipped).
    """
    space = _space(lexicon)
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
            sentence = Sentence(sid, pattern, {lang: r(spec) for lang, r in renderers})
            if max_words is not None and len(sentence.text["en"].split()) > max_words:
                misses += 1
                if misses > 100 * n + 10_000:
                    raise ValueError(f"could not draw {n} distinct sentences of at most {max_words} words")
                continue
            out.append(sentence)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out
