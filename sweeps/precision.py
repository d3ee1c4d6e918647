"""The `[precision]` table of a sweep spec (`trials = "auto"`): parsing with one-line errors.

    trials = "auto"
    [precision]
    metric = "p_bad"          # p_race | p_bad | p_hang | p_timeout (default p_bad)
    target = 1e-4             # stop once the 95% interval lies entirely above or below target
    rel_half_width = 0.1      # ... or once the 95% half-width is <= 10% of the estimate
    max_trials = 2_000_000    # per point (required)
    min_trials = 100_000      # per point before any stop (default: one shard)

Either criterion may be given alone. The rule itself (what the estimate and
interval are, which status wins) is core.precision, shared with `queries`.
sweeps.spec calls `parse_precision` and nothing else from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.precision import METRICS, Precision

__all__ = ["PRECISION_KEYS", "Search", "parse_precision", "parse_search", "precision_toml", "search_toml"]

PRECISION_KEYS: tuple[str, ...] = ("metric", "target", "rel_half_width", "max_trials", "min_trials")
_MAX = 10**15


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _count(key: str, v: Any) -> int | None:
    if _is_int(v) or isinstance(v, float) and math.isfinite(v) and v.is_integer():
        iv = int(v)
    else:
        return None
    return iv if 1 <= iv <= _MAX else None


def parse_precision(raw: Any, shard_trials: int, where: str) -> Precision:
    """Validate the raw `[precision]` table; ValueError with one line `where: precision...: ...`."""

    def err(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if raw is None:
        raise err('trials = "auto" needs a [precision] table (metric, target and/or rel_half_width, max_trials)')
    if not isinstance(raw, Mapping):
        raise err(f"precision = {raw!r} is not allowed: [precision] must be a table")
    for key in raw:
        if key not in PRECISION_KEYS:
            raise err(f"precision: unknown key '{key}'; allowed: {', '.join(PRECISION_KEYS)}")
    metric = raw.get("metric", "p_bad")
    if not isinstance(metric, str) or metric not in METRICS:
        raise err(f"precision.metric = {metric!r} is not allowed: one of {', '.join(METRICS)}")
    target = raw.get("target")
    if target is not None and not (
        isinstance(target, (int, float)) and not isinstance(target, bool) and 0 < target < 1
    ):
        raise err(f"precision.target = {target!r} is not allowed: a probability in (0, 1)")
    rel = raw.get("rel_half_width")
    if rel is not None and not (
        isinstance(rel, (int, float)) and not isinstance(rel, bool) and math.isfinite(rel) and rel > 0
    ):
        raise err(f"precision.rel_half_width = {rel!r} is not allowed: a finite number > 0 (0.1 = +-10%)")
    if target is None and rel is None:
        raise err("precision: give target, rel_half_width or both (a point stops at the first one met)")
    if "max_trials" not in raw:
        raise err("precision: missing required key 'max_trials' (the per-point budget)")
    max_trials = _count("max_trials", raw["max_trials"])
    if max_trials is None:
        raise err(f"precision.max_trials = {raw['max_trials']!r} is not allowed: an integer in [1, 10**15]")
    if "min_trials" in raw:
        min_trials = _count("min_trials", raw["min_trials"])
        if min_trials is None:
            raise err(f"precision.min_trials = {raw['min_trials']!r} is not allowed: an integer in [1, 10**15]")
    else:
        min_trials = min(shard_trials, max_trials)
    if min_trials > max_trials:
        raise err(f"precision.min_trials = {min_trials} is not allowed: at most max_trials = {max_trials}")
    return Precision(
        metric=metric,  # type: ignore[arg-type]
        target=None if target is None else float(target),
        rel_half_width=None if rel is None else float(rel),
        max_trials=max_trials,
        min_trials=min_trials,
    )


def precision_toml(rule: Precision) -> list[str]:
    """The canonical `[precision]` table as TOML lines (criteria not given are left out)."""
    lines = ["[precision]", f'metric = "{rule.metric}"']
    if rule.target is not None:
        lines.append(f"target = {rule.target!r}")
    if rule.rel_half_width is not None:
        lines.append(f"rel_half_width = {rule.rel_half_width!r}")
    lines += [f"max_trials = {rule.max_trials}", f"min_trials = {rule.min_trials}"]
    return lines


# ---- [search]: the capacity boundary by bisection on n_cpus ---------------------------------

SEARCH_KEYS: tuple[str, ...] = ("n_cpus",)


class Search(BaseModel):
    """`[search] n_cpus = [lo, hi]`: per combination of the axes, the largest n_cpus in [lo, hi] whose
    probe is decided 'below target' by the [precision] rule (sweeps.search)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lo: int = Field(ge=2)
    hi: int

    def canonical_obj(self) -> dict[str, object]:
        return {"n_cpus": [self.lo, self.hi]}


def parse_search(raw: Any, precision: Precision | None, axes: Mapping[str, Any], base: Mapping[str, Any], where: str) -> Search:
    """Validate the raw `[search]` table; ValueError with one line `where: search...: ...`."""
    from core.params import MAX_CPUS

    def err(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if not isinstance(raw, Mapping):
        raise err(f"search = {raw!r} is not allowed: [search] must be a table with n_cpus = [lo, hi]")
    for key in raw:
        if key not in SEARCH_KEYS:
            raise err(f"search: unknown key '{key}'; allowed: {', '.join(SEARCH_KEYS)} (only n_cpus is searched)")
    if precision is None or precision.target is None:
        raise err('[search] needs trials = "auto" and a [precision] target (a probe passes when it is below target)')
    if "n_cpus" in axes:
        raise err("search: n_cpus is searched; remove it from [axes] (a [base] value is replaced by the probes)")
    lim = raw.get("n_cpus")
    if not (isinstance(lim, list) and len(lim) == 2 and all(_is_int(v) for v in lim)
            and 2 <= lim[0] < lim[1] <= MAX_CPUS):
        raise err(f"search.n_cpus = {lim!r} is not allowed: [lo, hi], integers with 2 <= lo < hi <= {MAX_CPUS}")
    return Search(lo=int(lim[0]), hi=int(lim[1]))


def search_toml(search: Search) -> list[str]:
    return ["[search]", f"n_cpus = [{search.lo}, {search.hi}]"]
