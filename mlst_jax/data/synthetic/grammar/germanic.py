"""German and Dutch renderers."""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.lexicon import ADJS, NOUNS, VERBS
from mlst_jax.data.synthetic.grammar.renderer import _Lang
from mlst_jax.data.synthetic.grammar.specs import NP, Spec, _agr
from mlst_jax.data.synthetic.grammar.words import _join, number_word


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
