"""Analyses of per-task gradient similarities (seed 000 §4.3), from the quadruplets of `gradients.similarities`.

* **Per decoder layer** (Fig. 2): the mean cosine over every quadruplet of a layer (all its units and all
  language pairs sharing a copy), with the mean per module kind (self_attn, encoder_attn, ffn, layer_norm).
* **Language × language** (Fig. 3): the mean cosine of each language pair over every unit of every layer
  where the two languages share a copy (diagonal 1; NaN for a pair that shares no unit).

`write_analysis` saves both as CSV and PNG; `mlst_jax.jobs.analyze.analyze_run` computes everything from a
training run's checkpoint (what `mlst analyze` does). `depth_trend` and `family_contrast` state the two figures'
findings as numbers with a test each (`findings`: both).
"""
from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
from scipy.stats import spearmanr

from mlst_jax.sharing.gradients import Quadruplet

__all__ = ["LayerSimilarity", "layer_of", "module_kind", "layer_similarity", "language_similarity",
           "write_analysis", "plot_layer_similarity", "plot_language_similarity", "depth_trend",
           "family_contrast", "findings", "MODULE_KINDS", "FAMILIES"]

_LAYER = re.compile(r"^decoder/layers_(\d+)/")
MODULE_KINDS = ("self_attn", "encoder_attn", "ffn", "layer_norm")
FAMILIES = {"en": "Germanic", "de": "Germanic", "nl": "Germanic", "es": "Romance", "fr": "Romance",
            "it": "Romance", "pt": "Romance", "ro": "Romance", "ru": "Slavic"}


class LayerSimilarity(NamedTuple):
    """Mean (and standard deviation) cosine of one decoder layer's quadruplets; `by_module` per module kind."""

    layer: int
    mean: float
    std: float
    count: int
    by_module: dict[str, float]


def layer_of(unit: str) -> int | None:
    """3 for 'decoder/layers_3/ffn/fc1'; None outside the decoder layers."""
    m = _LAYER.match(unit)
    return int(m.group(1)) if m else None


def module_kind(unit: str) -> str:
    """'self_attn', 'encoder_attn', 'ffn' or 'layer_norm' for a decoder-layer unit; its module name otherwise."""
    name = unit.split("/")[2] if unit.count("/") >= 2 else unit
    if name.endswith("layer_norm"):
        return "layer_norm"
    return name


def layer_similarity(quads: Iterable[Quadruplet]) -> list[LayerSimilarity]:
    """Per decoder layer (in layer order), the mean cosine of its quadruplets."""
    by_layer: dict[int, list[Quadruplet]] = {}
    for q in quads:
        layer = layer_of(q.unit)
        if layer is not None:
            by_layer.setdefault(layer, []).append(q)
    out = []
    for layer in sorted(by_layer):
        cos = np.array([q.cosine for q in by_layer[layer]], np.float64)
        kinds: dict[str, list[float]] = {}
        for q in by_layer[layer]:
            kinds.setdefault(module_kind(q.unit), []).append(q.cosine)
        out.append(LayerSimilarity(layer, float(cos.mean()), float(cos.std()), len(cos),
                                   {k: float(np.mean(v)) for k, v in kinds.items()}))
    return out


def language_similarity(quads: Iterable[Quadruplet], langs: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(languages, [n, n] mean cosine over all units) from quadruplets; `langs` fixes the order (default:
    order of first appearance)."""
    quads = list(quads)
    if langs is None:
        langs = list(dict.fromkeys(l for q in quads for l in (q.lang_j, q.lang_k)))
    langs = list(langs)
    index = {l: i for i, l in enumerate(langs)}
    n = len(langs)
    total, count = np.zeros((n, n)), np.zeros((n, n))
    for q in quads:
        if q.lang_j not in index or q.lang_k not in index:
            raise ValueError(f"quadruplet language pair ({q.lang_j}, {q.lang_k}) is not in {langs}")
        j, k = index[q.lang_j], index[q.lang_k]
        for a, b in ((j, k), (k, j)):
            total[a, b] += q.cosine
            count[a, b] += 1
    sim = np.divide(total, count, out=np.full((n, n), np.nan), where=count > 0)
    np.fill_diagonal(sim, 1.0)
    return langs, sim


def _write_layer_csv(path: Path, layers: list[LayerSimilarity]) -> None:
    kinds = [k for k in MODULE_KINDS if any(k in l.by_module for l in layers)]
    kinds += sorted({k for l in layers for k in l.by_module} - set(kinds))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["layer", "mean_cosine", "std_cosine", "quadruplets"] + [f"mean_{k}" for k in kinds])
        for l in layers:
            w.writerow([l.layer, f"{l.mean:.6f}", f"{l.std:.6f}", l.count] +
                       [f"{l.by_module[k]:.6f}" if k in l.by_module else "" for k in kinds])


def _write_language_csv(path: Path, langs: list[str], sim: np.ndarray) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["lang"] + langs)
        for l, row in zip(langs, sim):
            w.writerow([l] + ["" if math.isnan(v) else f"{v:.6f}" for v in row])


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot_layer_similarity(layers: list[LayerSimilarity], path: str | os.PathLike | None = None, title: str = ""):
    """Mean gradient cosine per decoder layer (bold) and per module kind; saved to `path` if given.
    Returns the matplotlib figure."""
    fig, ax = _figure((6.0, 4.0))
    x = [l.layer for l in layers]
    for kind in MODULE_KINDS:
        ys = [l.by_module.get(kind, np.nan) for l in layers]
        if not all(math.isnan(y) for y in ys):
            ax.plot(x, ys, marker=".", linewidth=1, alpha=0.6, label=kind)
    ax.plot(x, [l.mean for l in layers], marker="o", linewidth=2.5, color="black", label="all units")
    for l in layers:
        ax.annotate(f"{l.mean:.3f}", (l.layer, l.mean), textcoords="offset points", xytext=(0, 7), ha="center",
                    fontsize=8)
    ax.set_xticks(x)
    ax.set_xlabel("decoder layer (decoder/layers_i)")
    ax.set_ylabel("mean gradient cosine similarity")
    ax.set_title(title or "Gradient similarity across decoder layers")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def plot_language_similarity(langs: Sequence[str], sim: np.ndarray, path: str | os.PathLike | None = None,
                             title: str = ""):
    """Heatmap of the language × language mean cosine (diagonal left blank so that the colour scale shows the
    pairs), values written in the cells; saved to `path` if given. Returns the figure."""
    from matplotlib import colormaps

    n = len(langs)
    off = np.array(sim, np.float64)
    np.fill_diagonal(off, np.nan)
    size = max(4.0, 0.6 * n + 2.5)
    fig, ax = _figure((size + 1.0, size))
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    finite = off[np.isfinite(off)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    im = ax.imshow(np.ma.masked_invalid(off), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n), langs)
    ax.set_yticks(range(n), langs)
    for a in range(n):
        for b in range(n):
            if a != b and np.isfinite(off[a, b]):
                frac = (off[a, b] - vmin) / (vmax - vmin)
                ax.text(b, a, f"{off[a, b]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if frac > 0.6 else "white")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("mean gradient cosine similarity")
    ax.set_title(title or "Gradient similarity between target languages")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def write_analysis(out_dir: str | os.PathLike, quads: Sequence[Quadruplet],
                   langs: Sequence[str] | None = None) -> dict[str, Any]:
    """Writes layer_similarity.{csv,png} and language_similarity.{csv,png} into `out_dir`; returns
    {"layers": [LayerSimilarity], "langs": [...], "language_similarity": [n, n], "files": {...}}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = layer_similarity(quads)
    if not layers:
        raise ValueError("no decoder-layer quadruplets to analyze (every unit fully language-specific?)")
    langs, sim = language_similarity(quads, langs)
    files = {name: out / name for name in ("layer_similarity.csv", "layer_similarity.png",
                                           "language_similarity.csv", "language_similarity.png")}
    _write_layer_csv(files["layer_similarity.csv"], layers)
    _write_language_csv(files["language_similarity.csv"], langs, sim)
    plot_layer_similarity(layers, files["layer_similarity.png"])
    plot_language_similarity(langs, sim, files["language_similarity.png"])
    return {"layers": layers, "langs": langs, "language_similarity": sim, "files": files}


def _spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """{"rho", "p_value", "n"}; None for what is undefined (fewer than 3 points have no p-value, constant input
    no rho)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p_value": None, "n": len(x)}
    rho, p = (float(v) if np.isfinite(v) else None for v in spearmanr(x, y))
    return {"rho": rho, "p_value": p if len(x) > 2 else None, "n": len(x)}


def depth_trend(quads: Iterable[Quadruplet]) -> dict[str, Any]:
    """Whether deeper decoder layers have more similar task gradients (Fig. 2): the mean cosine per layer, the last
    minus the first, and Spearman's rank correlation with depth (scipy; p two-sided) over the layer means
    (`by_layers`: as many points as layers, so no p-value below 3) and over the units (`by_units`: each decoder-layer
    unit copy's mean cosine against its layer)."""
    quads = list(quads)
    layers = layer_similarity(quads)
    if not layers:
        raise ValueError("no decoder-layer quadruplets")
    units: dict[tuple[str, int], list[float]] = {}
    for q in quads:
        if layer_of(q.unit) is not None:
            units.setdefault((q.unit, q.copy), []).append(q.cosine)
    return {"layers": [l.layer for l in layers], "means": [l.mean for l in layers], "first": layers[0].mean,
            "last": layers[-1].mean, "last_minus_first": layers[-1].mean - layers[0].mean,
            "by_layers": _spearman([l.layer for l in layers], [l.mean for l in layers]),
            "by_units": _spearman([layer_of(u) for u, _ in units], [float(np.mean(c)) for c in units.values()])}


def family_contrast(langs: Sequence[str], sim: np.ndarray, families: dict[str, str] = FAMILIES,
                    n_permutations: int = 10_000, seed: int = 0) -> dict[str, Any] | None:
    """Whether language pairs within a family are more similar than pairs across families (Fig. 3), from the
    language x language matrix of `language_similarity`: the mean over within-family pairs, over across-family
    pairs, their difference, and its one-sided permutation p-value: the share of `n_permutations` random
    reassignments of the languages to the families (sizes kept; the pairs share languages, so languages, not
    pairs, are exchanged) whose difference is at least the observed one, (k + 1) / (n + 1). A language outside
    `families` is a family of its own. None when there are no pairs of one kind."""
    langs = list(langs)
    codes = np.unique([families.get(l, l) for l in langs], return_inverse=True)[1]
    a, b = np.triu_indices(len(langs), k=1)
    keep = np.isfinite(sim[a, b])
    a, b, values = a[keep], b[keep], sim[a, b][keep]

    def difference(c: np.ndarray) -> np.ndarray:  # c: [..., n languages] family codes
        within = c[..., a] == c[..., b]
        n_in, n_out = within.sum(-1), (~within).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (within * values).sum(-1) / n_in - (~within * values).sum(-1) / n_out

    within = codes[a] == codes[b]
    if within.all() or not within.any():
        return None
    observed = float(difference(codes))
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(codes, (n_permutations, len(codes))), axis=1)
    k = int(np.sum(difference(shuffled) >= observed - 1e-12))  # ties count: a constant matrix gives p = 1
    return {"families": {l: families.get(l, l) for l in langs},
            "within": {"mean": float(values[within].mean()),
                       "pairs": [f"{langs[i]}-{langs[j]}" for i, j in zip(a[within], b[within])]},
            "across": {"mean": float(values[~within].mean()), "pairs": len(values[~within])},
            "difference": observed, "p_value": (k + 1) / (n_permutations + 1), "n_permutations": n_permutations,
            "seed": seed}


def findings(quads: Sequence[Quadruplet], langs: Sequence[str] | None = None) -> dict[str, Any]:
    """{"depth": `depth_trend`, "families": `family_contrast`} of the quadruplets."""
    return {"depth": depth_trend(quads), "families": family_contrast(*language_similarity(quads, langs))}
