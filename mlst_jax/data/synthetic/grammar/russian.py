"""Russian renderer."""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.lexicon import ADJS, NOUNS, NUMS, POSS, VERBS
from mlst_jax.data.synthetic.grammar.renderer import _Lang
from mlst_jax.data.synthetic.grammar.specs import NP, _agr
from mlst_jax.data.synthetic.grammar.words import _join, number_word


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
