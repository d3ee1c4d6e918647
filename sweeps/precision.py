"""The `[precision]` and `[search]` tables of a sweep spec (`trials = "auto"`) in canonical form.

    trials = "auto"
    [precision]
    metric = "p_bad"          # p_race | p_bad | p_hang | p_timeout (default p_bad)
    target = 1e-4             # stop once the 95% interval lies entirely above or below target
    rel_half_width = 0.1      # ... or once the 95% half-width is <= 10% of the estimate
    max_trials = 2_000_000    # per point (required)
    min_trials = 100_000      # per point before any stop (default: one shard)

    [search]
    n_cpus = [2, 4096]        # per combination of the axes: the largest n_cpus below target

Either criterion may be given alone. Validation of both tables as written is
sweeps.spec_input (the one spec validation path); the rule itself (what the
estimate and interval are, which status wins) is core.precision, shared with
`queries`. Here: the `Search` value and the canonical TOML of both tables.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from core.precision import Precision

__all__ = ["Search", "precision_toml", "search_toml"]


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


class Search(BaseModel):
    """`[search] n_cpus = [lo, hi]`: per combination of the axes, the largest n_cpus in [lo, hi] whose
    probe is decided 'below target' by the [precision] rule (sweeps.search)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lo: int
    hi: int
    """Validated as written by sweeps.spec_input.SearchInput (2 <= lo < hi <= MAX_CPUS)."""

    def canonical_obj(self) -> dict[str, object]:
        return {"n_cpus": [self.lo, self.hi]}


def search_toml(search: Search) -> list[str]:
    return ["[search]", f"n_cpus = [{search.lo}, {search.hi}]"]
