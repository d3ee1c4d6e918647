"""The coverage harness at CI size (issue 23 items 2 and 3): tests/coverage_harness.py says how.

Every (regime, estimator, metric) cell: R small runs (150-200 here, 2000 in benchmarks/coverage.py) of
independent seeds, the fraction of 95% intervals (core.intervals, as `outcomes` reports them) that contain
the stored truth (tests/data/coverage_truths.json, computed once by large naive/cmc runs or exactly). A cell
fails when its misses exceed the 99.9% quantile of Binomial(R, 0.07): an interval covering >= 93% fails
with probability <= 0.1%; at R = 200 that catches coverage below ~87%, the full run below ~91%.
Adaptive cases: sequences of real shards judged at every wave bound, target = truth; fails when the wrong
decisions exceed Binomial(R, 0.05)'s 99.9% quantile (the guarantee is <= 5% per point).
"""

from __future__ import annotations

import pytest

from core.estimators import ESTIMATORS

import coverage_harness as ch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def truths():
    return ch.load_truths()


def test_every_estimator_has_a_small_run_size():
    """A new estimator (e.g. `late`) is one more entry of ESTIMATOR_TRIALS: then every regime runs under it."""
    assert set(ch.ESTIMATOR_TRIALS) == set(ESTIMATORS)


def test_regimes_span_what_issue_23_asks(truths):
    """>= 12 non-trivial cells across every estimator x metric, and the regimes span wait 0/1, the fix,
    hold-offs, dead CPUs, rare and common, with issue 23's point among them."""
    rs = ch.REGIMES
    assert {r.params.get("wait", 1) for r in rs} == {0, 1}
    assert any(r.params.get("mitigation") == "early_flush" for r in rs)
    assert any(r.params.get("p_nmi_delay", 0) > 0 for r in rs)
    assert any(r.params.get("p_unresponsive", 0) > 0 for r in rs)
    assert ch.regime("panic-issue23").params == {"n_cpus": 64, "wait": 0, "wbinvd_us": 3000.0}
    kinds: dict[tuple[str, str], set[str]] = {}
    for r in rs:
        for m in ch.METRICS:
            t = truths[r.name]["metrics"][m]["value"]
            for e in ch.ESTIMATOR_TRIALS:
                k = "zero" if t == 0 else "rare" if t * ch.small_trials(r, e) < 1 else "common"
                kinds.setdefault((e, m), set()).add(k)
    for (e, m), ks in kinds.items():
        assert {"rare", "common"} <= ks, (e, m, ks)  # every estimator x metric is checked rare and common
    nontrivial = sum(1 for r in rs for m in ch.METRICS for _ in ch.ESTIMATOR_TRIALS
                     if truths[r.name]["metrics"][m]["value"] > 0)
    assert nontrivial >= 12


def test_truths_say_how_they_were_computed(truths):
    for r in ch.REGIMES:
        for m, t in truths[r.name]["metrics"].items():
            assert t["lo"] <= t["value"] <= t["hi"] and t["how"], (r.name, m)


@pytest.mark.parametrize("name", [r.name for r in ch.REGIMES])
def test_intervals_cover(name, truths):
    r = ch.regime(name)
    for e in ch.ESTIMATOR_TRIALS:
        for c in ch.run_cells(r, e, r.ci_reps, truths):
            row = c.row()
            assert c.passes, row
            if not c.trivial:  # the truth is known far better than one small run knows it
                assert ch.truth_precision(c, truths) <= 0.1, row


def test_the_harness_catches_the_issue23_interval(truths):
    """Before issue 23, cmc's p_bad interval was the CLT interval of the per-trial bad values: at issue 23's
    point it misses the truth whenever no timeout was seen (~90% of 1000-trial runs). The harness must fail
    it; the interval now reported passes on the same runs."""
    (bad,) = [c for c in ch.run_cells(ch.regime("panic-issue23"), "cmc", 60, truths) if c.metric == "p_bad"]
    assert bad.old_misses > ch.max_misses(bad.reps) and bad.passes
    assert bad.method == "cmc+counted"


@pytest.mark.parametrize("case", ch.ADAPTIVE, ids=[c.name for c in ch.ADAPTIVE])
def test_adaptive_decisions_hold_their_error_rate(case, truths):
    a = ch.run_adaptive(case, case.ci_reps, truths, case.ci_max_trials)
    assert a.passes, a.row()
