"""Result sets whose log10 p_race is a given function of the grid: for the importance and compare tests.

`write_y_grid(path, axes, y, y_var)` writes one cmc point per cell of the full grid
`axes` (name -> values, in array-dimension order): p_race = p_bad = 10 ** y[cell] as
the point's cmc estimate, with variance y_var[cell] * (p ln 10)^2, so the point's
log10 estimate is y and its delta-method variance of log10 is y_var, both exactly
what `point_estimates` must read back (to rounding).

`ishigami(x1, x2, x3, a, b)` and `ishigami_anova(x1, x2, x3, a, b)`: the function
sin x1 + a sin^2 x2 + b x3^4 sin x1 on a grid of level values, and its ANOVA
decomposition over the grid's cells (each level equally likely, axes independent)
from one-dimensional means only, so it checks the grid code independently.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthetic_results import Point, write_results


def write_y_grid(path: str | Path, axes: Mapping[str, Sequence[Any]], y: np.ndarray, y_var: np.ndarray | None = None,
                 *, base: Mapping[str, Any] | None = None, sweep: str = "grid", trials: int = 1000,
                 skip: Sequence[tuple[int, ...]] = ()) -> Path:
    """One cmc point per cell of `axes` (cells listed in `skip` left out) with log10 p_race = y[cell]."""
    names = list(axes)
    y = np.asarray(y, dtype=np.float64)
    assert y.shape == tuple(len(axes[n]) for n in names), (y.shape, names)
    y_var = np.zeros_like(y) if y_var is None else np.asarray(y_var, dtype=np.float64)
    skipped = set(skip)
    pts = []
    for idx in itertools.product(*(range(len(axes[n])) for n in names)):
        if idx in skipped:
            continue
        params = dict(base or {})
        params.update({n: axes[n][i] for n, i in zip(names, idx)})
        p = 10.0 ** y[idx]
        v = y_var[idx] * (p * math.log(10.0)) ** 2
        pts.append(Point(params, [{"clean": trials}], cmc=[(p, v, p, v)]))
    return write_results(path, pts, sweep=sweep, events=False, n_tasks=min(len(pts), 8))


def ishigami(x1: np.ndarray, x2: np.ndarray, x3: np.ndarray, a: float = 7.0, b: float = 0.1) -> np.ndarray:
    """sin x1 + a sin^2 x2 + b x3^4 sin x1, broadcast over the three arrays."""
    return np.sin(x1) + a * np.sin(x2) ** 2 + b * x3 ** 4 * np.sin(x1)


def ishigami_anova(x1: np.ndarray, x2: np.ndarray, x3: np.ndarray, a: float = 7.0,
                   b: float = 0.1) -> dict[str, np.ndarray]:
    """First-order and total indices of ishigami over the grid x1 x x2 x x3 (level values), in closed form.

    f = g1 (1 + h) + g2 with g1 = sin x1, g2 = a sin^2 x2, h = b x3^4. With means mu and
    population variances V over each axis' levels, the ANOVA terms are
    f1 = (g1 - mu1)(1 + muh), f2 = g2 - mu2, f3 = mu1 (h - muh), f13 = (g1 - mu1)(h - muh):
    V1 = V[g1] (1 + muh)^2, V2 = V[g2], V3 = mu1^2 V[h], V13 = V[g1] V[h], and no other term.
    """
    g1, g2, h = np.sin(x1), a * np.sin(x2) ** 2, b * x3 ** 4
    v1 = g1.var() * (1 + h.mean()) ** 2
    v2 = g2.var()
    v3 = g1.mean() ** 2 * h.var()
    v13 = g1.var() * h.var()
    v = v1 + v2 + v3 + v13
    return {"first_order": np.array([v1, v2, v3]) / v, "total": np.array([v1 + v13, v2, v3 + v13]) / v, "var": v}
