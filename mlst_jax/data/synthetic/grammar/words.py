"""Word helpers shared by the renderers: joining, capitalization and cardinal number words."""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.lexicon import NUMS


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
