"""English renderer."""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.lexicon import ADJS, NOUNS, VERBS
from mlst_jax.data.synthetic.grammar.renderer import _Lang
from mlst_jax.data.synthetic.grammar.specs import NP, _agr
from mlst_jax.data.synthetic.grammar.words import _join, number_word


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
