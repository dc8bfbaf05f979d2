"""French, Spanish, Italian and Portuguese renderers (Romanian is in :mod:`.romanian`)."""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.lexicon import ADJS, NOUNS, POSS, VERBS
from mlst_jax.data.synthetic.grammar.renderer import _Lang
from mlst_jax.data.synthetic.grammar.specs import NP, _agr
from mlst_jax.data.synthetic.grammar.words import _cap, _join, number_word


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
