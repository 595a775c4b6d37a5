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
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1180px;padding:0 1em;color:#222;font-size:15px}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}h3{font-size:1.05em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
td.best{font-weight:bold;background:#e3f4e1}td.txt,th.txt{text-align:left}.pos{color:#1a7f37}.neg{color:#b42318}
.hit{background:#fff0b3}.tag{font-size:.8em;padding:0 .3em;border-radius:3px;background:#ffd24d;margin-left:.3em}
.notrun{color:#a33;font-style:italic}.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.4em .8em}.muted{color:#777}
.charts{display:flex;flex-wrap:wrap;gap:1em}.cards{display:grid;grid-template-columns:1fr;gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em .9em}.card p{margin:.3em 0}
pre{background:#f7f7f7;border:1px solid #e5e5e5;padding:.6em;white-space:pre-wrap;word-break:break-word;font-size:.85em;max-height:32em;overflow:auto}
svg{background:#fcfcfc;border:1px solid #eee;max-width:100%;height:auto}
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
    """A cell value: counts as integers with thousands separators, tiny values in scientific
    notation (a Sinkhorn error of 7e-7 must not print as 0.0000), others with 4 decimals.

    >>> [fmt(x) for x in (64.0, 1234567, 0.12345, 7e-7, 0.0, 45.50200085, None)]
    ['64', '1,234,567', '0.1235', '7.00e-07', '0', '45.5020', 'None']
    """
    if isinstance(v, bool) or v is None:
        return esc(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return esc(v)
        if v == 0:
            return "0"
        if v.is_integer() and abs(v) >= 1:
            return f"{int(v):,}"
        if abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return esc(v)


def seconds(v: Any) -> str:
    """Seconds with one decimal ('-' when unknown)."""
    return f"{float(v):,.1f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


class Raw(str):
    """Already-rendered HTML: cell content ``table`` does not escape, or a whole ``<td ...>`` cell."""


def cell(c: Any, attrs: str = "") -> str:
    if isinstance(c, Raw) and c.startswith("<td"):
        return str(c)
    return f"<td{attrs}>{c if isinstance(c, Raw) else fmt(c)}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], text_cols: Sequence[int] = ()) -> str:
    """A table in a horizontal scroll box (a wide table never widens the page)."""
    tc = set(text_cols)
    head = "".join(f'<th{" class=txt" if i in tc else ""}>{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(c, " class=txt" if i in tc else "") for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def metrics_matrix(metrics: Sequence[str], models: dict[str, dict[str, float]], main: str | None,
                   baselines: Sequence[str]) -> str:
    """Metrics as rows, models as columns; the best value of each row in a highlighted bold cell
    (higher is better for every ranking metric); a last column with the main model's relative
    difference to the best baseline of that row.

    ``models``: column name -> {metric: value}; ``main``: the column compared; ``baselines``: the
    columns it is compared against."""
    cols = list(models)
    header = ["metric", *cols] + (["vs best baseline"] if main and baselines else [])
    rows = []
    for m in metrics:
        vals = {c: models[c].get(m) for c in cols}
        nums = [v for v in vals.values() if isinstance(v, (int, float)) and math.isfinite(v)]
        best = max(nums) if nums else None
        cells = [Raw(f"<td class=txt>{esc(m)}</td>")]
        for c in cols:
            v = vals[c]
            is_best = best is not None and isinstance(v, (int, float)) and v == best and len(nums) > 1
            cells.append(Raw(f'<td{" class=best title=best" if is_best else ""}>{fmt(v) if v is not None else "-"}</td>'))
        if main and baselines:
            base = [models[b].get(m) for b in baselines if isinstance(models[b].get(m), (int, float))]
            mv = vals.get(main)
            if base and isinstance(mv, (int, float)) and max(base) > 0:
                d = (mv - max(base)) / max(base)
                cells.append(Raw(f'<td class="{"pos" if d >= 0 else "neg"}">{d:+.1%}</td>'))
            else:
                cells.append(Raw("<td>-</td>"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th{' class=txt' if i == 0 else ''}>{esc(h)}</th>" for i, h in enumerate(header))
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'


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


def line_svg(x: Sequence[float], series: dict[str, Sequence[float]], title: str, width: int = 560, height: int = 260,
             marker_x: float | None = None, marker_label: str = "chosen epoch") -> str:
    """One line per named series over a shared x (epochs); ``marker_x``: a dashed vertical line
    (the epoch whose weights were kept)."""
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
    if marker_x is not None and x0 <= marker_x <= x1:
        mx = px(marker_x)
        right = mx > pad_l + w / 2  # label on the inner side of the line, never past the plot
        parts.append(f'<line x1="{mx:.1f}" y1="{pad_t}" x2="{mx:.1f}" y2="{pad_t + h}" stroke="#444" stroke-dasharray="4 3"/>'
                     f'<text x="{mx - 3 if right else mx + 3:.1f}" y="{pad_t + h - 4}" font-size="10" fill="#444" '
                     f'text-anchor="{"end" if right else "start"}">{esc(marker_label)} {marker_x:g}</text>')
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


# Records the rendered page width on the root element, so a headless browser's --dump-dom tells
# whether the page overflows horizontally (tests/test_report_browser.py).
WIDTH_PROBE = ("<script>(function(){var d=document.documentElement;"
               "d.setAttribute('data-scroll-width',String(d.scrollWidth));"
               "d.setAttribute('data-client-width',String(d.clientWidth));"
               "d.setAttribute('data-scroll-height',String(d.scrollHeight));})();</script>")


def page(title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    """The whole document: inline CSS, the sections, the width probe; no external resource."""
    toc = " · ".join(f'<a href="#s{i}">{esc(h)}</a>' for i, (h, _) in enumerate(sections))
    body = "".join(f'<h2 id="s{i}">{esc(h)}</h2>\n{content}\n' for i, (h, content) in enumerate(sections))
    return (
        f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
        f"content=\"width=device-width,initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p class=\"muted\">{esc(subtitle)}</p>"
        f"<p class=\"muted\">{toc}</p>\n{body}{WIDTH_PROBE}</body></html>"
    )
