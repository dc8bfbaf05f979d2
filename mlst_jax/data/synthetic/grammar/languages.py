"""The renderer of every language and :func:`render`."""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.english import _En
from mlst_jax.data.synthetic.grammar.germanic import _De, _Nl
from mlst_jax.data.synthetic.grammar.romance import _Es, _Fr, _It, _Pt
from mlst_jax.data.synthetic.grammar.romanian import _Ro
from mlst_jax.data.synthetic.grammar.russian import _Ru
from mlst_jax.data.synthetic.grammar.specs import Spec

_RENDERERS = {c.code: c() for c in (_En, _De, _Es, _Fr, _It, _Nl, _Pt, _Ro, _Ru)}


def render(spec: Spec, lang: str) -> str:
    """Renders a sentence spec in one language: capitalized, with final '.' or '?'."""
    return _RENDERERS[lang].render(spec)
