"""Hypothesis strategies for Params, derived from core.params.PARAM_SPECS.

Every parameter of the table is drawn from its domain unless a test narrows it to
the region it is about, so a parameter added to the table is fuzzed by every
property test without editing them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from core.params import PARAM_SPECS, SPECS, Params, ParamSpec

INT_SPAN = 30
"""Generic int strategies cover [ge, ge + INT_SPAN] (n_cpus sizes the trial arrays)."""


def domain_strategy(s: ParamSpec) -> st.SearchStrategy[Any]:
    """Values of one parameter from its domain: its choices; ints near the lower bound;
    probabilities with their edges 0 and 1; other floats from the lower bound to 10x the
    default (and the default itself), capped at the upper bound."""
    if s.choices is not None:
        return st.sampled_from(s.choices)
    lo = s.ge if s.ge is not None else (s.gt if s.gt is not None else 0)
    if s.kind == "float" and s.gt is not None:  # an open lower bound (udelay_factor > 0)
        hi = max(10.0 * float(s.default), float(lo) + 1.0)
        return st.one_of(st.just(float(s.default)), st.floats(float(lo), hi, exclude_min=True))
    if s.kind == "int":
        hi = lo + INT_SPAN if s.le is None else min(s.le, lo + INT_SPAN)
        return st.integers(int(lo), int(hi))
    if s.kind == "float":
        hi = max(10.0 * float(s.default), float(lo) + 1.0)
        if s.le is not None:
            hi = min(hi, float(s.le))
        return st.one_of(st.just(float(s.default)), st.sampled_from([float(lo), hi]), st.floats(float(lo), hi))
    raise TypeError(f"{s.name}: no generic strategy for kind {s.kind!r} without choices")


def params_strategy(**narrow: st.SearchStrategy[Any]) -> st.SearchStrategy[Params]:
    """Params with every table parameter drawn from `domain_strategy`, except those in `narrow`."""
    unknown = set(narrow) - set(SPECS)
    if unknown:
        raise KeyError(f"not model parameters: {sorted(unknown)}")
    return st.builds(Params, **{s.name: narrow.get(s.name, domain_strategy(s)) for s in PARAM_SPECS})
