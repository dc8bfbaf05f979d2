"""Romanian renderer."""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.lexicon import ADJS, NOUNS, POSS, VERBS
from mlst_jax.data.synthetic.grammar.renderer import _Lang
from mlst_jax.data.synthetic.grammar.specs import NP, _agr
from mlst_jax.data.synthetic.grammar.words import _join, number_word


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
