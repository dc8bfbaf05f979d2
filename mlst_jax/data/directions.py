"""Translation directions: X→En, En→X, English-centric and many-to-many selections, zero-shot directions and the
X→Y BLEU matrix of seed 001 Table 6 (supervised cells marked)."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

PIVOT = "en"
NAMED = ("x-en", "en-x", "english-centric", "m2m")


def parse_directions(spec: str | Iterable[str], langs: Sequence[str], pivot: str = PIVOT) -> list[tuple[str, str]]:
    """Directions over `langs` named by `spec`:

    - `x-en`: every X→pivot; `en-x`: pivot→every X; `english-centric`: both (seed 001's Europarl zero-shot training
      data); `m2m`: every ordered pair (the supervised many-to-many baseline of Table 6);
    - a comma-separated list (or sequence) of `src-tgt` pairs, e.g. `"de-en,en-fr"`; named sets may be mixed in.
    """
    langs = list(langs)
    if pivot not in langs:
        raise ValueError(f"the pivot language {pivot!r} is not among the languages {langs}")
    others = [l for l in langs if l != pivot]
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise ValueError("empty direction spec; use x-en, en-x, english-centric, m2m or src-tgt pairs")
    out: list[tuple[str, str]] = []
    for item in items:
        if item == "x-en":
            new = [(x, pivot) for x in others]
        elif item == "en-x":
            new = [(pivot, x) for x in others]
        elif item == "english-centric":
            new = [(x, pivot) for x in others] + [(pivot, x) for x in others]
        elif item == "m2m":
            new = [(s, t) for s in langs for t in langs if s != t]
        else:
            src, sep, tgt = item.partition("-")
            if not sep or src not in langs or tgt not in langs or src == tgt:
                raise ValueError(f"direction {item!r}: expected one of {', '.join(NAMED)} or 'src-tgt' with two "
                                 f"different languages of {langs}")
            new = [(src, tgt)]
        out.extend(d for d in new if d not in out)
    return out


def zero_shot(supervised: Iterable[tuple[str, str]], langs: Sequence[str]) -> list[tuple[str, str]]:
    """Every ordered pair of different `langs` not in `supervised`."""
    sup = set(supervised)
    return [(s, t) for s in langs for t in langs if s != t and (s, t) not in sup]


def bleu_matrix(scores: Mapping[str, float], langs: Sequence[str], supervised: Iterable[tuple[str, str]],
                baseline: Mapping[str, float] | None = None) -> str:
    """Source rows × target columns like Table 6: supervised cells end in `*`, missing cells are `-`; with
    `baseline`, cells read `baseline/ours`."""
    sup = set(supervised)

    def cell(s, t):
        if s == t:
            return ""
        key = f"{s}-{t}"
        if key not in scores:
            return "-"
        text = f"{scores[key]:.1f}"
        if baseline is not None:
            text = f"{baseline[key]:.1f}/{text}" if key in baseline else f"-/{text}"
        return text + ("*" if (s, t) in sup else "")

    rows = [[f"{s}→"] + [cell(s, t) for t in langs] for s in langs]
    header = ["src\\tgt"] + list(langs)
    width = max(len(c) for r in rows + [header] for c in r)
    lines = ["  ".join(c.rjust(width) for c in header)]
    lines += ["  ".join(c.rjust(width) for c in r) for r in rows]
    lines.append("* supervised direction; the others are zero-shot")
    return "\n".join(lines)


def average(scores: Mapping[str, float], directions: Iterable[tuple[str, str]]) -> float | None:
    """Mean BLEU over `directions` present in `scores` (None when none is)."""
    vals = [scores[f"{s}-{t}"] for s, t in directions if f"{s}-{t}" in scores]
    return sum(vals) / len(vals) if vals else None
