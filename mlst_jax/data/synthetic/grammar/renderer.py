"""Sentence assembly shared by all languages; each language subclasses :class:`_Lang`."""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.lexicon import ADJS, ADVS, FW, NOUNS, VERBS
from mlst_jax.data.synthetic.grammar.specs import NP, Spec, _KINDS, _agr
from mlst_jax.data.synthetic.grammar.words import _cap, _join


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

    def be_loc(self, spec, q):
        """'be' + subject + location; questions invert subject and verb (en, de, nl)."""
        be = self.fw["be_past" if spec.tense == "past" else "be"][_agr(spec.subj)[0]]
        s, l = self.subject(spec.subj), self.loc(spec.place)
        return _join(be, s, l) if q else _join(s, be, l)

    def pred(self, spec, neg, q):
        """Subject + 'be' (+ negation) + adjective; questions invert subject and verb (en, de, nl)."""
        be = self.fw["be"][_agr(spec.subj)[0]]
        s, a = self.subject(spec.subj), ADJS[spec.adj][self.code][0]
        return _join(be, s, a) if q else _join(s, be, self.fw["not"] if neg else "", a)

    def complement(self, spec: Spec) -> str:
        emb = spec.comp
        p = _agr(spec.subj)[0]
        inner = self.clause(self.np(emb.subj, "nom"), _agr(emb.subj), emb.subj, emb, "sub", False)
        return self.matrix(self.subject(spec.subj), self.present(VERBS[spec.verb][self.code], p), inner)

    def present(self, v: list, p: int) -> str:
        return v[p]

    def matrix(self, subj: str, verb: str, inner: str) -> str:
        return _join(subj, verb, self.fw["that"], inner)
