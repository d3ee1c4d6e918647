"""Boundary search ([search], sweeps.search) without Ray: synthetic shards with a known p(n_cpus),
so the true boundary is known; bisection brackets it to the stated resolution, flags a
non-monotone combination, and gives the same probes and rows for any completion order or
kill-and-resume point."""

from __future__ import annotations

import pyarrow as pa
import pytest
from wave_helpers import drive_plan

from sweeps.search import BoundarySearch, midpoint, resolved
from sweeps.spec import SpecError, parse_spec

SPEC = """
name = "s"
seed = 9
trials = "auto"
shard_trials = 200
task_seconds = 0.0001
[precision]
target = 0.01
max_trials = 102400
[search]
n_cpus = [2, 4096]
[axes]
p_stall = [1e-5, 2e-5, 1.0]
"""


def p_of(values: dict) -> float:
    """Synthetic p_bad: linear in n_cpus (boundary at n = 0.01 / slope), except p_stall = 1 is decreasing."""
    n, s = values["n_cpus"], values["p_stall"]
    if s == 1.0:
        return 0.05 if n < 100 else 0.001
    return min(1.0, s * n)


def drive(spec, seed: int, limit: int, stored=(), kill_after=None):
    """Run a search with probes finishing in a random order; returns (stored tables, search)."""
    search = BoundarySearch(spec)
    tables, _ = drive_plan(search.plan, p_of, seed, limit, stored, kill_after)
    return tables, search


def keys(tables):
    t = pa.concat_tables(tables)
    return sorted(zip(t["point_id"].to_pylist(), t["shard"].to_pylist()))


def test_resolution_and_midpoint():
    assert resolved(100, 105) and not resolved(100, 111)  # +-5% at ~100
    assert resolved(5, 7) and not resolved(5, 8)  # +-1 CPU where 5% is less than 1
    assert midpoint(2, 4096) == 91  # sqrt(8192) = 90.5
    assert midpoint(10, 12) == 11 and midpoint(10, 11000) == 332


def test_search_brackets_the_known_boundary():
    spec = parse_spec(SPEC)
    _, search = drive(spec, 0, 4)
    rows = {r["p_stall"]: r for r in search.report()}
    for s in (1e-5, 2e-5):
        r = rows[s]
        true = 0.01 / s  # p(n) = s n crosses the target here: 1000 and 500
        a, b = r["max_n_cpus"], r["fails_at_n_cpus"]
        assert a is not None and b is not None and a < b
        assert resolved(a, b), r
        assert r["monotone"] and r["probes"] <= 14
        # a pass is "upper bound below target", so a lies below the true boundary; a fail only
        # means "not shown below": b may be a little below it too, where the interval still spans
        assert a < true and b <= true * 1.3, r
        assert b > true * 0.7, r


def test_non_monotone_combination_is_flagged():
    spec = parse_spec(SPEC.replace("[2, 4096]", "[200, 4096]").replace("1e-5, 2e-5, 1.0", "1.0"))
    spec2 = parse_spec(SPEC.replace("1e-5, 2e-5, 1.0", "1.0"))
    # p = 0.05 below 100 CPUs and 0.001 above: the lower limit fails, the upper passes
    _, s2 = drive(spec2, 1, 3)
    (row,) = s2.report()
    assert row["probe_status"][0] == "above target" and row["probe_status"][-1] == "below target"
    assert row["monotone"] is False and row["max_n_cpus"] is None
    _, s1 = drive(spec, 1, 3)
    (row1,) = s1.report()
    assert row1["result"] == "passes at the upper limit n_cpus=4096" and row1["monotone"]


def test_search_is_deterministic_under_any_order_and_resume():
    spec = parse_spec(SPEC)
    ref, s0 = drive(spec, 0, 1)
    want = keys(ref)
    report = s0.report()
    for seed, limit in [(1, 2), (2, 7), (3, 50)]:
        got, s = drive(spec, seed, limit)
        assert keys(got) == want and s.report() == report
    for kill in (1, len(ref) // 4, len(ref) // 2, len(ref) - 1):
        part, _ = drive(spec, 5, 4, kill_after=kill)
        full, s = drive(spec, 6, 4, stored=part)
        assert keys(full) == want and s.report() == report


def test_search_spends_less_than_the_full_grid():
    spec = parse_spec(SPEC.replace("1e-5, 2e-5, 1.0", "1e-5, 2e-5"))
    tables, _ = drive(spec, 0, 4)
    t = pa.concat_tables(tables)
    assert sum(t["trials"].to_pylist()) < 2 * 14 * 102400 / 4  # 2 combinations x <= 14 probes, most decided early


@pytest.mark.parametrize("body,needle", [
    ("[search]\nn_cpus = [2, 64]\n", '[search] needs trials = "auto"'),
    ('[precision]\nrel_half_width = 0.1\nmax_trials = 10\n[search]\nn_cpus = [2, 64]\n', "needs trials"),
    ('[precision]\ntarget = 0.1\nmax_trials = 10\n[search]\nn_cpus = [64, 2]\n', "search.n_cpus = [64, 2]"),
    ('[precision]\ntarget = 0.1\nmax_trials = 10\n[search]\nn_cpus = [1, 64]\n', "2 <= lo < hi"),
    ('[precision]\ntarget = 0.1\nmax_trials = 10\n[search]\nwbinvd_us = [1, 2]\n', "unknown key 'wbinvd_us'"),
    ('[precision]\ntarget = 0.1\nmax_trials = 10\n[search]\nn_cpus = [2, 64]\n[axes]\nn_cpus = [4, 8]\n',
     "n_cpus is searched"),
])
def test_bad_search_is_one_line(body, needle):
    trials = 'trials = "auto"\n' if "[precision]" in body else "trials = 10\n"
    with pytest.raises(SpecError) as ei:
        parse_spec('name = "t"\nseed = 1\n' + trials + body, where="s.toml")
    msg = str(ei.value)
    assert "\n" not in msg and needle in msg, msg


def test_search_spec_round_trips():
    spec = parse_spec(SPEC)
    again = parse_spec(spec.to_toml())
    assert again == spec and again.spec_hash == spec.spec_hash
    assert again.search.lo == 2 and again.search.hi == 4096
