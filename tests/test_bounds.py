"""core.bounds: the model upper bound of p_timeout, checked against hand-computed cases, against
counted timeouts of the naive core (independent: it simulates the trials MODEL.md describes), and
through the doors that use it (core.intervals, the adaptive rule, `outcomes`, capacity)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.bounds import BOUND_PARAMS, timeout_max, timeout_max_of
from core.intervals import MODEL_BOUND, MODEL_ZERO, Observed, estimate, possible
from core.outcomes import TIMEOUT
from core.params import DEFAULTS, PARAM_NAMES, Params
from core.precision import BELOW, OPEN, PointTally, Precision, ShardStats
from core.vectorized import simulate

from precision_helpers import cp

N_TRIALS = 100_000
LEVEL = 0.999
"""The counted checks use 99.9% Clopper-Pearson bounds (scipy): with ~12 fixed-seed cases a valid
bound fails one by chance with probability ~1%, and the seeds are fixed, so a pass is stable."""


def _q(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _counted(p: Params, n: int = N_TRIALS, seed: int = 11) -> int:
    return int(np.sum(simulate(p, n, seed).outcome == TIMEOUT))


@pytest.mark.parametrize("uf", [1.0, 0.5])
def test_no_flush_no_holdoff_is_the_closed_form(uf):
    """Early flush under revision 1 on the panic path: no flag is set, so per CPU
    a = P(max(ipi, off) > T1 - prologue) * P(nmi_base + Exp(nmi_jitter) + prologue > N), by hand
    (T1 = 1e6 udelay_factor, N = nmi_wait_us udelay_factor = 20 µs)."""
    v = dict(wait=0, mitigation="early_flush", model_rev=1, n_cpus=8, p_stall=0.3, stall_median_us=1e6 * uf,
             stall_sigma=1.0, nmi_wait_us=20.0 / uf, udelay_factor=uf)
    p = Params(**v)
    y = 1e6 * uf - 5.0  # T1 - prologue
    s_ipi = math.exp(-(y - 1.0) / 2.0)
    s_off = 0.3 * _q(math.log(y / (1e6 * uf))) + 0.7 * math.exp(-y / 20.0)
    a = (s_ipi + s_off - s_ipi * s_off) * math.exp(-(20.0 - 5.0 - 2.0) / 3.0)
    want = 1.0 - (1.0 - a) ** 7
    assert timeout_max(p) == pytest.approx(want, rel=1e-8)
    # the truth is below it, and not far: the last CPU NMI'd waits nmi_send_us less (exp(-1/3)), and
    # 1.05 late CPUs on average put the earlier ones further from the deadline
    k = _counted(p)
    lo, hi = cp(k, N_TRIALS, LEVEL)
    assert lo <= timeout_max(p) <= 2.0 * hi, (k, timeout_max(p))


def test_dead_cpus_alone_make_the_bound_exact():
    """Without any other way to time out (no flag, a 10 ms deadline no NMI misses) the bound is
    1 - (1 - p_unresponsive)^(n_cpus - 1) exactly, and so is the truth: the counts agree both ways."""
    p = Params(wait=0, mitigation="early_flush", model_rev=1, n_cpus=33, p_unresponsive=0.001)
    want = 1.0 - 0.999 ** 32
    assert timeout_max(p) == pytest.approx(want, rel=1e-8)
    lo, hi = cp(_counted(p), N_TRIALS, LEVEL)
    assert lo <= want <= hi


COMMON = [
    dict(wbinvd_us=3162.0, p_stall=0.1, n_cpus=64),
    dict(wbinvd_us=1778.0, p_stall=0.1, n_cpus=256),
    dict(wbinvd_us=5623.0, p_stall=0.01, n_cpus=16, mitigation="early_flush"),  # revision 2: flags as under none
    dict(p_stall=0.1, n_cpus=32, p_nmi_delay=0.05, nmi_delay_median_us=3000.0),
    dict(p_stall=0.05, n_cpus=32, p_unresponsive=0.001),
    dict(p_stall=0.2, n_cpus=16, wbinvd_us=2000.0, udelay_factor=0.5, ipi_jitter_us=50.0, rewbinvd_factor=2.0),
    dict(p_stall=0.0, irq_off_mean_us=2e5, n_cpus=16, wbinvd_us=4000.0),  # CPUs inside WBINVD at the NMI
    dict(p_stall=0.0, irq_off_mean_us=2e5, n_cpus=16, wbinvd_us=300.0, wbinvd_contention=0.5),
    # held-off NMIs find CPUs that entered after T_nmi inside their WBINVD
    dict(p_stall=0.0, irq_off_mean_us=2e5, n_cpus=16, wbinvd_us=2500.0, p_nmi_delay=0.5, nmi_delay_median_us=4000.0),
    dict(p_stall=0.1, n_cpus=16, wbinvd_us=3000.0, incoherent_fraction=0.3, nmi_wait_us=3000.0),
    dict(p_stall=0.0, n_cpus=8, wbinvd_us=5e5, wbinvd_sigma=1.0),  # late for its flush alone: w > 1 s
    dict(p_stall=0.2, n_cpus=16, wbinvd_us=1500.0, wbinvd_sigma=1.5, stall_sigma=0.2, prologue_us=200.0),
]


@pytest.mark.parametrize("over", COMMON, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_the_bound_is_never_below_the_counted_timeouts(over):
    """Where timeouts are common enough to count, the bound is at or above their 99.9% lower bound,
    and within 2.5x of their upper one (measured 1.0-1.9x over these cases: a term counted twice or
    a case bound left loose fails it)."""
    p = Params(wait=0, **over)
    k = _counted(p)
    assert k >= 20, "a case that checks nothing"
    lo, hi = cp(k, N_TRIALS, LEVEL)
    assert lo <= timeout_max(p) <= 2.5 * hi, (k, timeout_max(p))


@pytest.mark.parametrize("over", [COMMON[0], COMMON[6], dict(p_stall=0.0316, n_cpus=64, ipi_jitter_us=30.0)])
def test_the_flush_sums_are_upper_sums(over):
    """The sums over the w grid are right-endpoint sums of nondecreasing integrands, so they lie
    above the integral: a grid 70x finer (close to the integral) never gives more."""
    from core import bounds

    laws = bounds._Laws(dict(DEFAULTS, wait=0, **over))
    coarse, fine = laws.flagged(), laws.flagged(step=1.001)
    assert coarse >= fine * (1 - 1e-9) and fine > 0
    assert coarse <= 3 * fine  # and the default grid is not far off


def test_nmis_held_off_find_cpus_that_entered_after_the_loop_inside_their_flush():
    """Every CPU enters stop_this_cpu() ~4.5 ms after T_nmi (a stall of 1.0055 s +- 0.1%) and every NMI
    is held off 6 ms: each NMI lands inside a 3 ms WBINVD, and the second flush ends ~0.5 ms past the
    10 ms deadline, so nearly every trial times out. Only the WBINVD case's window reaching past the
    NMI's base latency (the Q(t) term of core.bounds) sees these CPUs: without it the bound is ~1e-4."""
    p = Params(wait=0, n_cpus=4, p_stall=1.0, stall_median_us=1_005_500.0, stall_sigma=0.001, wbinvd_us=3000.0,
               wbinvd_sigma=0.05, p_nmi_delay=1.0, nmi_delay_median_us=6000.0, nmi_delay_sigma=0.02)
    k = _counted(p)
    lo, _ = cp(k, N_TRIALS, LEVEL)
    assert lo > 0.9 and timeout_max(p) >= lo, (k, timeout_max(p))


def test_the_cache_keeps_points_that_differ_in_n_cpus_apart():
    """n_cpus moves the per-CPU bound even without WBINVD contention (the WBINVD case's window ends
    after the NMI sends to the other CPUs): a cached value of another n_cpus must not be reused."""
    from core import bounds

    v = dict(DEFAULTS, wait=0, p_stall=1e-3, stall_median_us=1_005_500.0, stall_sigma=0.001, wbinvd_us=3000.0,
             wbinvd_sigma=0.05, p_nmi_delay=1.0, nmi_delay_median_us=6000.0, nmi_delay_sigma=0.02,
             nmi_send_us=200.0, wbinvd_contention=0.0)
    bounds._per_cpu.cache_clear()
    for n in (4, 30):
        a = bounds._Laws(dict(v, n_cpus=n)).per_cpu()
        assert timeout_max_of(dict(v, n_cpus=n)) == pytest.approx(1.0 - (1.0 - a) ** (n - 1), rel=1e-8)  # (1e-9 safety)
    assert bounds._Laws(dict(v, n_cpus=30)).per_cpu() > 1.004 * bounds._Laws(dict(v, n_cpus=4)).per_cpu()


def test_the_kexec_path_and_unflagged_stops_bound_at_zero_or_tiny():
    assert timeout_max(Params(wait=1, p_unresponsive=0.5)) == 0.0  # wait = 1 cannot time out (zero by model)
    assert possible(1, 0.5)[1] is False
    # 100 µs flushes need ~9 sigma to reach 10 ms: the bound is far below any count (1e-18 at 1024 CPUs)
    assert timeout_max(Params(wait=0, wbinvd_us=100.0, p_stall=0.1, n_cpus=1024)) < 1e-15
    # the same with 10 ms flushes is no bound at all
    assert timeout_max(Params(wait=0, wbinvd_us=1e4, p_stall=0.0316, n_cpus=4096)) > 0.5


def test_every_parameter_the_bound_reads_moves_it_and_the_others_do_not():
    """BOUND_PARAMS is the list the SQL function takes: a parameter left out of it that moves a
    timeout would be a wrong bound for every point that sweeps it."""
    base = dict(DEFAULTS, wait=0, p_stall=0.05, wbinvd_us=1500.0, p_nmi_delay=0.05, nmi_delay_median_us=3000.0,
                p_unresponsive=1e-6, wbinvd_contention=0.01, model_rev=2, mitigation="none")
    b0 = timeout_max_of(base)
    assert 0 < b0 < 1
    bumped = {"n_cpus": 128, "mitigation": "early_flush", "model_rev": 1, "wait": 1, "ipi_base_us": 999_000.0,
              "ipi_jitter_us": 2e5, "irq_off_mean_us": 2e5, "nmi_base_us": 3000.0, "nmi_jitter_us": 2000.0,
              "prologue_us": 3000.0}
    for k in BOUND_PARAMS:
        v = bumped.get(k, base[k] * 1.7 if isinstance(base[k], float) and base[k] else 0.3)
        if k in ("mitigation", "model_rev"):
            # early flush leaves the flags set on the panic path under revision 2, clears them under 1
            assert timeout_max_of(dict(base, mitigation="early_flush")) == b0 == timeout_max_of(dict(base, model_rev=1))
            assert timeout_max_of(dict(base, mitigation="early_flush", model_rev=1)) < b0
            continue
        assert timeout_max_of(dict(base, **{k: v})) != b0, k
    for k in set(PARAM_NAMES) - set(BOUND_PARAMS):
        assert k == "handoff_us", k


def test_intervals_cut_at_the_bound_only_where_no_timeout_was_counted():
    o = Observed(10_000, timeout=0, timeout_possible=True, timeout_max=1e-8)
    e = estimate("p_timeout", o)
    assert (e.method, e.p, e.lo, e.hi) == (MODEL_BOUND, 0.0, 0.0, 1e-8)
    # a bound above the 0-event bound (3.69e-4) changes nothing
    e = estimate("p_timeout", Observed(10_000, timeout_possible=True, timeout_max=0.5))
    assert e.method == "counted" and e.hi == pytest.approx(cp(0, 10_000, 0.95)[1], rel=1e-9)
    # a counted timeout: the counted interval, whatever the bound says
    e = estimate("p_timeout", Observed(10_000, timeout=1, timeout_possible=True, timeout_max=1e-8))
    lo, hi = cp(1, 10_000, 0.95)
    assert e.method == "counted" and e.lo == pytest.approx(lo, rel=1e-9) and e.hi == pytest.approx(hi, rel=1e-9)
    # where a timeout cannot happen, zero by model; p_bad never takes the bound
    assert estimate("p_timeout", Observed(10_000, timeout_possible=False, timeout_max=1e-8)).method == MODEL_ZERO
    assert estimate("p_bad", Observed(10_000, timeout_possible=True, timeout_max=1e-12)).method == "counted"


def test_the_adaptive_rule_decides_below_target_from_the_bound():
    rule = Precision(metric="p_timeout", target=1e-6, max_trials=10**8, min_trials=1000)
    small = dict(DEFAULTS, wait=0, wbinvd_us=100.0, n_cpus=512, p_stall=0.1)
    big = dict(small, wbinvd_us=5000.0)
    for values, want in ((small, BELOW), (big, OPEN)):
        t = PointTally.for_params(values)
        t.add(0, ShardStats(1000, 0, 0, 0, "naive"))
        assert t.status(rule) == want
    assert PointTally.for_params(small).timeout_max == timeout_max_of(small)
    assert PointTally.for_params(dict(small, wait=1)).timeout_max == 1.0  # unused: zero by model


def test_outcomes_capacity_and_plot_cells_read_the_same_bound(tmp_path):
    """The `outcomes` view carries the bound (timeout_max) and cuts p_timeout's interval at it where no
    timeout was counted; capacity's worst cell is the larger bound; a plot cell pools it trial-weighted
    over its points (a point that cannot time out counting 0)."""
    from queries.capacity import capacity
    from queries.db import connect
    from queries.plot import plot

    import synthetic_results as sr

    pts = [sr.Point({"wait": 0, "wbinvd_us": w, "n_cpus": 64}, [{"clean": 4000}, {"clean": 2000}])
           for w in (100.0, 200.0)]
    pts.append(sr.Point({"wait": 1, "wbinvd_us": 100.0, "n_cpus": 64}, [{"clean": 3000}]))
    pts.append(sr.Point({"wait": 0, "wbinvd_us": 5000.0, "n_cpus": 32}, [{"clean": 5990, "timeout": 10}]))
    d = sr.write_results(tmp_path / "r", pts, sweep="b")
    con = connect(d)
    rows = con.execute("SELECT wait, wbinvd_us, p_timeout, p_timeout_lo, p_timeout_hi, p_timeout_method, timeout_max "
                       "FROM outcomes ORDER BY wait, wbinvd_us").fetchall()
    by = {(r[0], r[1]): r for r in rows}
    b1, b2 = (timeout_max_of(p.full_params()) for p in pts[:2])
    assert 0 < b1 < b2 < 1e-12
    assert by[(0, 100.0)][2:] == (0.0, 0.0, b1, MODEL_BOUND, b1)
    assert by[(0, 200.0)][2:] == (0.0, 0.0, b2, MODEL_BOUND, b2)
    lo, hi = cp(10, 6000, 0.95)
    r = by[(0, 5000.0)]
    assert r[5] == "counted" and r[6] is None and r[3] == pytest.approx(lo, rel=1e-9) and r[4] == pytest.approx(hi, rel=1e-9)
    assert by[(1, 100.0)][5] == MODEL_ZERO
    cap = capacity(con, 1e-6, metric="p_timeout", by=[], where="wait = 0 AND n_cpus = 64")
    (cell,) = cap.cells.to_pylist()
    assert cell["method"] == MODEL_BOUND and max(v for k, v in cell.items() if k.endswith("_hi")) == b2
    res = plot(con, tmp_path / "p.png", x="n_cpus", metric="p_timeout", size=(2.0, 2.0), dpi=20)
    got = {c["n_cpus"]: c for c in res.cells}
    assert got[64]["method"] == MODEL_BOUND
    assert got[64]["hi"] == pytest.approx((6000 * b1 + 6000 * b2 + 3000 * 0.0) / 15000, rel=1e-12)
    assert got[32]["method"] == "counted"
