"""Boundary search (sweeps.search), test strength (issue 23 item 5): the bracket updates, the reported
bounds and the monotonicity flag against hand-computed cases.

Two kinds of checks, both independent of the search's own arithmetic:

- `report()` on hand-made probes: a BoundarySearch is built (no task runs), its bracket's probes and
  estimates are set by hand and the row is compared with what the module doc says, worked out here
  by hand for each case (which n_cpus is the limit, which fails first, the flag, the counts).
- driven searches (synthetic shards, tests/wave_helpers) over a known step function p(n_cpus) whose
  boundary is known, including probes whose interval can only span the target (p = target exactly:
  "budget exhausted" must count as failing, never as a pass).
"""

from __future__ import annotations

import dataclasses

from wave_helpers import drive_plan

from core.precision import ABOVE, BELOW, EXHAUSTED, naive_estimate
from sweeps.search import BoundarySearch, resolved
from sweeps.spec import parse_spec

SPEC = """
name = "strength"
seed = 3
trials = "auto"
shard_trials = 400
task_seconds = 0.0001
[precision]
target = 0.05
max_trials = 3200
[search]
n_cpus = [2, 4096]
"""


def est(lo: float, hi: float, p: float | None = None):
    """An estimate with the given interval (built from a real one, so its type is whatever core.precision uses)."""
    return dataclasses.replace(naive_estimate(1, 100), p=(lo + hi) / 2 if p is None else p, lo=lo, hi=hi)


def report_of(probes: dict[int, tuple[str, object]], done: bool = True) -> dict:
    """report() of a one-combination search whose probes are exactly `probes` (n_cpus -> (status, estimate))."""
    s = BoundarySearch(parse_spec(SPEC))
    (b,) = s.brackets.values()
    b.probes = dict(probes)
    b.pending = set()
    b.done = done
    (row,) = s.report()
    return row


def test_report_of_a_clean_bracket_by_hand():
    row = report_of({2: (BELOW, est(0.0, 0.01)), 64: (BELOW, est(0.01, 0.04, 0.02)),
                     91: (EXHAUSTED, est(0.03, 0.07)), 4096: (ABOVE, est(0.5, 0.7))})
    assert row["max_n_cpus"] == 64 and row["fails_at_n_cpus"] == 91
    assert row["p_bad_hi_at_max"] == 0.04  # the upper bound of the largest passing probe, not its estimate
    assert row["probes"] == 4 and row["probe_n_cpus"] == [2, 64, 91, 4096]
    assert row["unresolved_probes"] == 1  # only the budget-exhausted one, not the above-target one
    assert row["monotone"] is True
    assert row["result"] == "largest passing n_cpus=64, first failing 91"


def test_one_crossing_pair_among_monotone_ones_is_flagged():
    """lo(64) = 0.5 > hi(128) = 0.2 (p falls from 64 to 128): every other pair is ordered, one is not."""
    row = report_of({2: (BELOW, est(0.0, 0.01)), 64: (ABOVE, est(0.5, 0.6)), 128: (ABOVE, est(0.1, 0.2)),
                     4096: (ABOVE, est(0.55, 0.9))})
    assert row["monotone"] is False
    assert row["max_n_cpus"] == 2 and row["fails_at_n_cpus"] == 64 and row["unresolved_probes"] == 0


def test_adjacent_probes_crossing_are_flagged():
    """Only two probes, crossing: the one pair there is must be compared."""
    row = report_of({2: (ABOVE, est(0.3, 0.4)), 4096: (ABOVE, est(0.1, 0.2))})
    assert row["monotone"] is False and row["max_n_cpus"] is None
    assert row["result"] == "fails at the lower limit n_cpus=2"


def test_touching_intervals_are_not_a_crossing():
    """lo(2) == hi(64): both can be the same p, so the probes are consistent with a monotone p."""
    row = report_of({2: (EXHAUSTED, est(0.01, 0.02)), 64: (EXHAUSTED, est(0.005, 0.01)),
                     4096: (ABOVE, est(0.5, 0.6))})
    assert row["monotone"] is True and row["unresolved_probes"] == 2 and row["max_n_cpus"] is None


def test_a_pass_above_the_first_failure_is_flagged_even_with_overlapping_intervals():
    """2 not shown below (interval spans), 64 passes: intervals overlap, yet a pass above a failure is not monotone."""
    row = report_of({2: (EXHAUSTED, est(0.005, 0.06)), 64: (BELOW, est(0.001, 0.009)),
                     4096: (ABOVE, est(0.5, 0.6))})
    assert row["monotone"] is False
    assert row["max_n_cpus"] is None and row["fails_at_n_cpus"] == 2  # nothing passes below the first failure


def test_open_bracket_says_open():
    row = report_of({2: (BELOW, est(0.0, 0.01))}, done=False)
    assert row["result"] == "open"


# ---- driven searches -------------------------------------------------------------------------------


def step_p(values: dict) -> float:
    """p = 0 below 100 CPUs; exactly the target 0.05 from 100 to 999 (undecidable: budget exhausted); 0.5 above."""
    n = values["n_cpus"]
    return 0.0 if n < 100 else (0.05 if n < 1000 else 0.5)


def test_search_treats_budget_exhausted_as_failing():
    """The true boundary is 100 (p = 0 below it, p = target from 100 to 999, 0.5 above): 2 passes, 4096 is
    above, and probes in [100, 1000) can never be shown below the target (at p = target their interval
    spans it: budget exhausted, or above it by chance over several looks), so they fail. Hand-traced from
    2 and 4096: 91 (pass), then 611, 236, 147, 116, 103 fail, 97 passes; [97, 103] is within +-5%
    (3 <= 5). A budget-exhausted probe counted as a pass would move the bracket above 100."""
    spec = parse_spec(SPEC)
    search = BoundarySearch(spec)
    drive_plan(search.plan, step_p, 0, 3)
    (row,) = search.report()
    status = dict(zip(row["probe_n_cpus"], row["probe_status"]))
    assert row["probe_n_cpus"] == [2, 91, 97, 103, 116, 147, 236, 611, 4096], row
    assert all(s == BELOW for n, s in status.items() if n < 100) and status[4096] == ABOVE
    between = [s for n, s in status.items() if 100 <= n < 1000]
    assert set(between) <= {EXHAUSTED, ABOVE} and between.count(EXHAUSTED) >= 3
    assert row["max_n_cpus"] == 97 and row["fails_at_n_cpus"] == 103 and resolved(97, 103)
    assert row["unresolved_probes"] == between.count(EXHAUSTED) and row["monotone"] is True
    assert row["p_bad_hi_at_max"] < 0.05


def test_search_that_passes_at_the_upper_limit_stops_there():
    spec = parse_spec(SPEC.replace("[2, 4096]", "[2, 64]"))
    search = BoundarySearch(spec)
    drive_plan(search.plan, lambda v: 0.0, 0, 2)
    (row,) = search.report()
    assert row["probe_n_cpus"] == [2, 64] and row["max_n_cpus"] == 64 and row["fails_at_n_cpus"] is None
    assert row["result"] == "passes at the upper limit n_cpus=64"


def test_two_combinations_keep_their_own_probes():
    """Probe point indices are combination x (hi - lo + 1) + offset: an off-by-one width would mix the
    combinations' probes (the hi probe of one read as the lo probe of the next)."""
    spec = parse_spec(SPEC.replace("[2, 4096]", "[2, 64]") + "[axes]\np_stall = [1e-5, 1.0]\n")
    search = BoundarySearch(spec)
    drive_plan(search.plan, lambda v: 0.0 if v["p_stall"] < 0.5 else 0.5, 0, 4)
    rows = {r["p_stall"]: r for r in search.report()}
    assert rows[1e-5]["probe_n_cpus"] == [2, 64] and rows[1e-5]["max_n_cpus"] == 64
    assert rows[1.0]["probe_n_cpus"] == [2, 64] and rows[1.0]["max_n_cpus"] is None
    assert rows[1.0]["probe_status"] == [ABOVE, ABOVE]
