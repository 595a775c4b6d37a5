"""Self-contained HTML for the run report: inline CSS and SVG only (opens offline, no CDN).

Pure functions: each takes plain numbers/dicts and returns an HTML fragment string.

Example::

    >>> from blast_ray.report.html import histogram_svg, page
    >>> svg = histogram_svg([1, 2, 2, 3, 50], title="interactions per user")
    >>> "<svg" in svg and "<script" not in svg
    True
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

import numpy as np

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.notrun{color:#a33;font-style:italic}.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.4em .8em}.muted{color:#777}.charts{display:flex;flex-wrap:wrap;gap:1em}
svg{background:#fcfcfc;border:1px solid #eee}
"""

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def esc(x: Any) -> str:
    return html.escape(str(x))


def not_run(what: str, why: str) -> str:
    """The placeholder for a missing piece: says what and why, never a fake number."""
    return f'<p class="notrun">{esc(what)}: not run ({esc(why)}).</p>'


def warning(text: str) -> str:
    """A visible warning box (e.g. training stopped at the epoch cap while still improving)."""
    return f'<p class="warn"><strong>Warning:</strong> {esc(text)}</p>'


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return esc(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return esc(v)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def histogram_svg(values: Sequence[float] | np.ndarray, title: str, n_bins: int = 30, width: int = 520, height: int = 260, log_x: bool = True) -> str:
    """A bar histogram (log-spaced bins by default, like the paper's Figure 1b long-tail plots)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return not_run(title, "no values")
    lo, hi = max(v.min(), 1.0) if log_x else v.min(), max(v.max(), 1.0)
    if log_x and hi > lo:
        edges = np.unique(np.round(np.geomspace(lo, hi + 1, n_bins + 1)))
    else:
        edges = np.linspace(v.min(), v.max() + 1, n_bins + 1)
    counts, edges = np.histogram(v, bins=edges)
    pad_l, pad_b, pad_t = 48, 36, 24
    w, h = width - pad_l - 10, height - pad_b - pad_t
    cmax = max(int(counts.max()), 1)
    bw = w / len(counts)
    bars = []
    for i, c in enumerate(counts):
        bh = h * c / cmax
        bars.append(
            f'<rect x="{pad_l + i * bw:.1f}" y="{pad_t + h - bh:.1f}" width="{max(bw - 1, 0.5):.1f}" height="{bh:.1f}" fill="#1f77b4">'
            f"<title>[{edges[i]:g}, {edges[i + 1]:g}): {c}</title></rect>"
        )
    ticks = [0, len(counts) // 2, len(counts)]
    xt = "".join(
        f'<text x="{pad_l + t * bw:.1f}" y="{height - 18}" font-size="10" text-anchor="middle">{edges[min(t, len(edges) - 1)]:g}</text>' for t in ticks
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
        f'<text x="{width / 2}" y="15" font-size="13" text-anchor="middle">{esc(title)}</text>'
        f'<text x="12" y="{pad_t + 10}" font-size="10">{cmax}</text><text x="30" y="{pad_t + h}" font-size="10">0</text>'
        + "".join(bars) + xt
        + f'<text x="{width / 2}" y="{height - 4}" font-size="10" text-anchor="middle">{"count (log bins)" if log_x else "value"}; n={v.size:,}</text></svg>'
    )


def line_svg(x: Sequence[float], series: dict[str, Sequence[float]], title: str, width: int = 520, height: int = 260) -> str:
    """One line per named series over a shared x (epochs)."""
    xs = np.asarray(x, dtype=float)
    ys = {k: np.asarray(v, dtype=float) for k, v in series.items() if len(v)}
    allv = np.concatenate([v[np.isfinite(v)] for v in ys.values()]) if ys else np.array([])
    if xs.size == 0 or allv.size == 0:
        return not_run(title, "no points")
    pad_l, pad_b, pad_t, pad_r = 52, 30, 24, 120
    w, h = width - pad_l - pad_r, height - pad_b - pad_t
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1)
    y0, y1 = float(allv.min()), float(allv.max())
    if math.isclose(y0, y1):
        y1 = y0 + 1e-9 + abs(y0) * 0.01

    def px(a: float) -> float:
        return pad_l + w * (a - x0) / (x1 - x0)

    def py(b: float) -> float:
        return pad_t + h - h * (b - y0) / (y1 - y0)

    parts = []
    for i, (name, v) in enumerate(ys.items()):
        col = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(xs, v) if np.isfinite(b))
        parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.6" points="{pts}"/>')
        parts.append(f'<text x="{width - pad_r + 6}" y="{pad_t + 14 * (i + 1)}" font-size="11" fill="{col}">{esc(name)}</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
        f'<text x="{(width - pad_r) / 2}" y="15" font-size="13" text-anchor="middle">{esc(title)}</text>'
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>'
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#999"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" font-size="10" text-anchor="end">{y1:.4g}</text>'
        f'<text x="{pad_l - 4}" y="{pad_t + h}" font-size="10" text-anchor="end">{y0:.4g}</text>'
        f'<text x="{pad_l}" y="{height - 10}" font-size="10">{x0:g}</text>'
        f'<text x="{pad_l + w}" y="{height - 10}" font-size="10" text-anchor="end">epoch {x1:g}</text>'
        + "".join(parts) + "</svg>"
    )


def page(title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    body = "".join(f"<h2>{esc(h)}</h2>\n{content}\n" for h, content in sections)
    return (
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p class=\"muted\">{esc(subtitle)}</p>\n{body}</body></html>"
    )
