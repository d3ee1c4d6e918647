"""Plots of the `outcomes` view: a heatmap over two axes, or lines of a metric along one axis.

- heatmap (`x`, `y`): log colour scale; a cell whose 95% interval is wide
  (upper/lower > 10, or 0 events) is hatched; 0-event cells are grey and
  labelled with their upper bound;
- lines (`x`, optional `lines`): the metric against x, one line per value of
  `lines`, error bars from the 95% bounds, 0-event points drawn at their upper
  bound with an open down-triangle.

Probabilities and their intervals are core.intervals.estimate, as in `outcomes`
(p_race the cmc estimate where the sweep ran cmc, p_bad then its race part plus
the counted hang/timeout part, counted outcomes exact bounds); the axis label names it. When several points fall into one cell (axes
other than the plotted ones vary) their counts are summed, or their cmc
estimates pooled with trial weights (probabilities), or the maximum is taken
(stop times), and the title says over which axes. Rendering uses matplotlib's Agg canvas
directly (no pyplot global state); the file is written atomically.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import matplotlib
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from core.histogram import TOP_EDGE_US
from core.params import PARAM_NAMES, suggest

from .capacity import METRICS as PROB_METRICS
from .db import QueryError, first_line, quote_ident, render_sql
from .estimates import CONF
from .format import atomic_write, header
from .sandbox import filtered_outcomes, refusal

__all__ = ["TIME_METRICS", "METRIC_NAMES", "PlotResult", "plot", "WIDE_RATIO"]

TIME_METRICS: tuple[str, ...] = ("t_mean_us", "t_p50_us", "t_p99_us", "t_p999_us", "t_max_us")
METRIC_NAMES: tuple[str, ...] = (*PROB_METRICS, *TIME_METRICS)
WIDE_RATIO = 10.0
"""A cell is hatched when its upper/lower bound ratio exceeds this (or it has 0 events)."""

_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


@dataclass
class PlotResult:
    path: Path
    kind: str
    title: str
    cells: list[dict[str, Any]]
    n_points: int
    aggregated_over: list[str] = field(default_factory=list)
    size_px: tuple[int, int] = (0, 0)


def _check_axis(name: str | None, what: str) -> None:
    if name is not None and name not in PARAM_NAMES:
        raise QueryError(f"{what} '{name}' is not a parameter{suggest(name)}")


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _fmt_p(v: float) -> str:
    if v == 0:
        return "0"
    s = f"{v:.2g}"
    if "e" in s:
        m, e = s.split("e")
        s = f"{m}e{int(e)}"
    return s


def _fmt_us(v: float) -> str:
    """A time in µs, in the unit that keeps it short: 323 µs, 21.1 ms, 1.11 s (+inf: unresolved, ">=86.6 s")."""
    if v == float("inf"):
        return f">={TOP_EDGE_US / 1e6:.3g} s"
    if v < 1e3:
        return f"{v:.3g} µs"
    if v < 1e6:
        return f"{v / 1e3:.3g} ms"
    return f"{v / 1e6:.3g} s"


MAX_PIXELS = 50_000_000
"""Largest image drawn (width x height in pixels; e.g. 40x30 inches at 200 dpi): Agg holds
4 bytes per pixel and more while drawing, so 99x99 inches at 1200 dpi would need ~57 GB."""
MAX_SIDE_PIXELS = 2**16 - 1
"""Agg refuses images this wide or tall (a ValueError deep inside matplotlib)."""


def check_pixels(size: tuple[float, float], dpi: float) -> None:
    """QueryError (one line) if a figure of `size` inches at `dpi` is above the pixel budget."""
    w, h = size[0] * dpi, size[1] * dpi
    if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE_PIXELS:
        raise QueryError(
            f"a {size[0]:g}x{size[1]:g} inch figure at {dpi:g} dpi is {w:,.0f}x{h:,.0f} pixels, above the "
            f"{MAX_PIXELS / 1e6:g} million pixel budget (at most {MAX_SIDE_PIXELS:,} a side): lower --size or --dpi"
        )


def plot(
    con: duckdb.DuckDBPyConnection,
    out: str | Path,
    *,
    x: str,
    y: str | None = None,
    metric: str = "p_race",
    lines: str | None = None,
    where: str | None = None,
    title: str | None = None,
    size: tuple[float, float] = (8.0, 6.0),
    dpi: int = 100,
) -> PlotResult:
    """Draw `metric` over `x` (and `y`: heatmap, or `lines`: one line per value) into `out`."""
    out = Path(out)
    fmt = _FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise QueryError(f"-o {out}: the file name must end in one of {', '.join(_FORMATS)}")
    if not out.parent.is_dir():
        raise QueryError(f"cannot write '{out}': directory '{out.parent}' does not exist")
    if metric not in METRIC_NAMES:
        import difflib

        close = difflib.get_close_matches(metric, METRIC_NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise QueryError(f"unknown metric '{metric}'{hint}: one of {', '.join(METRIC_NAMES)}")
    _check_axis(x, "--x")
    _check_axis(y, "--y")
    _check_axis(lines, "--lines")
    if y is not None and lines is not None:
        raise QueryError("--y (heatmap) and --lines (line plot) are alternatives; give one")
    keys = [a for a in (x, y, lines) if a is not None]
    if len(set(keys)) != len(keys):
        raise QueryError(f"plot axes must differ: {', '.join(keys)}")
    if not all(s > 0 for s in size) or dpi <= 0:
        raise QueryError("plot size and dpi must be positive")
    check_pixels(size, dpi)

    with filtered_outcomes(con, where, "plot_src") as view:
        cells, varying, n_points = _cells(con, view, keys, metric)
    if not cells:
        raise QueryError("no points to plot" + (f" where {where}" if where else ""))

    aggregated = any(c["points"] > 1 for c in cells)
    agg_over = [a for a in varying if a not in keys] if aggregated else []
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if y is not None:
        kind = "heatmap"
        auto = f"{metric} by {x} and {y}"
        _heatmap(fig, ax, cells, x, y, metric)
    else:
        kind = "lines"
        auto = f"{metric} vs {x}" + (f", one line per {lines}" if lines else "")
        _lines(ax, cells, x, lines, metric)
    sub = []
    if aggregated:
        how = ("cmc estimates pooled" if _estimators(cells) == {"cmc"} else "counts summed") \
            if metric in PROB_METRICS else "maximum"
        per = max(c["points"] for c in cells)
        sub.append(f"up to {per} points per {'cell' if kind == 'heatmap' else 'marker'} aggregated "
                   f"over {', '.join(agg_over) or 'several sweeps'} ({how})")
    if where:
        sub.append(f"where {where}")
    full_title = title or auto
    if sub:
        # wrap the subtitle to the figure width (about 11 characters per inch at this size)
        full_title += "\n" + "\n".join(textwrap.wrap("; ".join(sub), width=max(40, int(fig.get_figwidth() * 11))))
    ax.set_title(full_title, fontsize=10)
    fig.tight_layout()
    atomic_write(out, writer=lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    w, h = fig.canvas.get_width_height()
    return PlotResult(out, kind, full_title, cells, n_points, agg_over, (int(w), int(h)))


def _estimators(cells: list[dict[str, Any]]) -> set[str]:
    return {c["estimator"] for c in cells if c.get("estimator")}


def _interval_label(cells: list[dict[str, Any]]) -> str:
    est = _estimators(cells)
    if est == {"cmc"}:
        return " (cmc estimate, 95% interval)"
    if est == {"naive"}:
        return " (exact 95% interval)"
    return " (cmc where run, else counts; 95% interval)"


def _cells(con: duckdb.DuckDBPyConnection, view: str, keys: list[str], metric: str):
    q = [quote_ident(k) for k in keys]
    slots = {"metric": f"'{metric}'" if metric in PROB_METRICS else "NULL::VARCHAR", "conf": f"{CONF!r}::DOUBLE"}
    if metric in PROB_METRICS:
        slots.update({"k": quote_ident(PROB_METRICS[metric]), "tvalue": "NULL::DOUBLE"})
    else:
        slots.update({"k": "NULL::BIGINT", "tvalue": f"max({quote_ident(metric)})"})
    slots.update({"keys": ", ".join(q), "src": view})
    try:
        cells = con.sql(render_sql("_plot_cells", slots)).to_arrow_table().to_pylist()
        distinct = ", ".join(f"count(DISTINCT {quote_ident(n)})" for n in PARAM_NAMES)
        counts = con.execute(f"SELECT count(*), {distinct} FROM {view}").fetchall()[0]
    except duckdb.Error as e:
        raise (refusal(e) or QueryError(f"plot query failed: {first_line(e)}")) from None
    n_points = int(counts[0])
    varying = [n for n, c in zip(PARAM_NAMES, counts[1:]) if c > 1]
    return cells, varying, n_points


def _sorted_values(vals) -> list:
    uniq = list(dict.fromkeys(v for v in vals))
    try:
        return sorted(uniq)
    except TypeError:
        return sorted(uniq, key=str)


def _wide(c: dict[str, Any]) -> bool:
    if c["lo"] is None or c["hi"] is None:
        return False
    if not c["k"] and c.get("estimator") != "cmc":
        return True
    return c["lo"] <= 0 or c["hi"] / c["lo"] > WIDE_RATIO


def _heatmap(fig: Figure, ax, cells: list[dict[str, Any]], x: str, y: str, metric: str) -> None:
    xs = _sorted_values(c[x] for c in cells)
    ys = _sorted_values(c[y] for c in cells)
    xi = {v: i for i, v in enumerate(xs)}
    yi = {v: i for i, v in enumerate(ys)}
    z = np.full((len(ys), len(xs)), np.nan)
    for c in cells:
        if c["value"] is not None and c["value"] > 0:
            z[yi[c[y]], xi[c[x]]] = c["value"]
    prob = metric in PROB_METRICS
    pos = z[np.isfinite(z)]
    his = [c["hi"] for c in cells if c["hi"] is not None and c["hi"] > 0]
    if pos.size:
        vmin, vmax = float(pos.min()), float(pos.max())
    elif his:
        vmin, vmax = min(his), max(his)
    else:
        vmin, vmax = 1e-9, 1.0
    if vmin == vmax:
        vmin, vmax = vmin / 2, vmax * 2
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    norm = mcolors.LogNorm(vmin=vmin, vmax=vmax)
    mesh = ax.pcolormesh(np.arange(len(xs) + 1) - 0.5, np.arange(len(ys) + 1) - 0.5,
                         np.ma.masked_invalid(z), cmap=cmap, norm=norm, edgecolors="white", linewidth=0.5)
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_label(f"{header(metric)}, log scale" + (_interval_label(cells) if prob else ""))

    annotate = len(xs) * len(ys) <= 150
    fontsize = 8 if len(xs) <= 10 else 6
    hatched = False
    for c in cells:
        i, j = xi[c[x]], yi[c[y]]
        v = c["value"]
        dark = False
        if v is not None and v > 0:
            r, g, b, _ = cmap(norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b <= 0.5
        if prob and _wide(c):
            hatched = True
            ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, hatch="///",
                                   edgecolor="#bbbbbb" if dark else "#555555", linewidth=0))
        if not annotate:
            continue
        if v is None:
            text = "-"
        elif v > 0:
            text = _fmt_p(v) if prob else _fmt_us(v)  # a quantile in the open top bin is +inf: ">= 8.66e7"
        else:
            text = f"<{_fmt_p(c['hi'])}" if prob and c["hi"] is not None else "0"
        ax.text(i, j, text, ha="center", va="center", fontsize=fontsize, color="white" if dark else "black")

    ax.set_xticks(range(len(xs)), [_fmt_value(v) for v in xs], rotation=45 if len(xs) > 8 else 0)
    ax.set_yticks(range(len(ys)), [_fmt_value(v) for v in ys])
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylim(-0.5, len(ys) - 0.5)
    ax.set_xlabel(header(x))
    ax.set_ylabel(header(y))
    if hatched:
        ax.text(1.0, -0.12 if len(xs) <= 8 else -0.18, f"hatched: 0 events or upper/lower bound > {WIDE_RATIO:g}x; "
                "grey '<u': 0 events, u = 95% upper bound",
                transform=ax.transAxes, ha="right", va="top", fontsize=7, color="#444444")


def _lines(ax, cells: list[dict[str, Any]], x: str, lines: str | None, metric: str) -> None:
    prob = metric in PROB_METRICS
    xs = _sorted_values(c[x] for c in cells)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    pos = {v: (float(v) if numeric else float(i)) for i, v in enumerate(xs)}
    groups = _sorted_values(c[lines] for c in cells) if lines else [None]
    log_x = numeric and min(pos.values()) > 0 and max(pos.values()) / min(pos.values()) >= 20
    span = (max(pos.values()) - min(pos.values())) or 1.0
    cmap = matplotlib.colormaps["viridis" if len(groups) > 10 else "tab10"]
    any_zero = False
    for gi, g in enumerate(groups):
        cs = [c for c in cells if lines is None or c[lines] == g]
        cs.sort(key=lambda c: pos[c[x]])
        colour = cmap(gi / max(len(groups) - 1, 1)) if len(groups) > 10 else cmap(gi % 10)
        label = None if lines is None else f"{_fmt_value(g)}"
        px = np.array([pos[c[x]] for c in cs])
        if len(groups) > 1:  # dodge: groups with equal values (e.g. 0 events) stay visible side by side
            shift = gi - (len(groups) - 1) / 2
            px = px * 1.04 ** shift if log_x else px + shift * 0.015 * span
        val = np.array([np.nan if c["value"] is None else c["value"] for c in cs], dtype=float)
        if prob:
            lo = np.array([np.nan if c["lo"] is None else c["lo"] for c in cs], dtype=float)
            hi = np.array([np.nan if c["hi"] is None else c["hi"] for c in cs], dtype=float)
            nz = val > 0
            err = np.vstack([val - np.where(lo > 0, lo, val * 1e-3), hi - val])
            ax.plot(px, np.where(nz, val, np.nan), "-", color=colour, alpha=0.6, linewidth=1)
            ax.errorbar(px[nz], val[nz], yerr=err[:, nz], fmt="o", color=colour, markersize=4, capsize=3,
                        label=label if nz.any() else None)
            if (~nz).any():
                any_zero = True
                ax.plot(px[~nz], hi[~nz], "v", markerfacecolor="none", markeredgecolor=colour, markersize=7,
                        label=None if nz.any() else label)
        else:  # a quantile in the open top bin (+inf) is unresolved: a gap, not a point
            ax.plot(px, np.where(np.isfinite(val), val, np.nan), "o-", color=colour, markersize=4, label=label)
    ax.set_yscale("log")
    if log_x:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks([pos[v] for v in xs], [str(v) for v in xs])
    elif len(xs) <= 12:
        ax.set_xticks([pos[v] for v in xs], [_fmt_value(v) for v in xs])
        ax.minorticks_off()
    ax.set_xlabel(header(x))
    ax.set_ylabel(header(metric) + (_interval_label(cells) if prob else ""))
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if any_zero:
        handles.append(Line2D([], [], marker="v", linestyle="", markerfacecolor="none", markeredgecolor="black"))
        labels.append("0 events: 95% upper bound")
    if handles:
        ax.legend(handles, labels, title=header(lines) if lines else None, fontsize=8, title_fontsize=8,
                  ncol=2 if len(handles) > 8 else 1)
