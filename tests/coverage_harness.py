"""The coverage harness (issue 23 items 2 and 3): do the reported 95% intervals cover, and are adaptive
decisions wrong at most 5% of the time per point?

Used by tests/test_coverage.py (reduced size, in CI) and benchmarks/coverage.py (full size, the table in
benchmarks/RESULTS.md). Nothing here re-derives an interval: each small run's interval is
core.intervals.estimate of the shard's counts and estimator values, exactly what `outcomes` reports for
a point of one shard (the SQL calls the same function; test_queries_estimates checks they agree).

**Regimes** (`REGIMES`) span wait 0/1, mitigation, NMI hold-offs, p_unresponsive, rare and common; every
regime runs under every estimator of `ESTIMATOR_TRIALS` (one entry per estimator: a new one, e.g. `late`,
is one more line there). A *cell* is (regime, estimator, metric). Per cell: R small runs of independent
seeds (SeedSequence([crc32("regime/estimator"), r])), the fraction whose interval contains the truth.

**Truths** are computed once (`compute_truths`, `python benchmarks/coverage.py --truths`) and stored with
how they were computed in tests/data/coverage_truths.json: a large naive run (Clopper-Pearson interval
stored beside it) for outcomes frequent enough to count, a large cmc run for rare races (cmc is checked
unbiased against naive in test_cmc / test_cmc_late), exact analytic values where the model gives them
(p_hang = 1 - (1 - p_unresponsive)^(n_cpus - 1) on the kexec path) and 0 where the model rules an
outcome out. p_bad's truth is the sum of its parts (outcomes are exclusive). A stored truth is only used
while the regime's parameters and the stream version are the ones it was computed for.

**Pass rule** (binomial tolerance): the hypothesis is coverage >= 93%. A cell fails when its misses exceed
the 99.9% quantile of Binomial(R, 0.07): an interval that covers >= 93% fails with probability <= 0.1%,
whatever R. The full run (R = 2000) then fails any cell whose coverage is <= ~91%; CI (R = 150..200)
any at <= ~87%. Cells whose truth is 0 by model (interval [0, 0]) are listed but trivial.

**Adaptive decisions** (`ADAPTIVE`): per case, R sequences of shards (the seeding of a real sweep, seeded
by sequence), the rule applied at every wave bound of sweeps.waves.wave_bounds by PointTally.status (the
one rule WavePlan calls), target = the truth: every "below target" or "above target" is then wrong.
The same sequences are also judged by the old rule (95% at every look) for comparison. A case fails when
its wrong decisions exceed the 99.9% quantile of Binomial(R, 0.05) (the guarantee: <= 5% per point).
"""

from __future__ import annotations

import json
import math
import statistics
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sst

from core.estimators import ESTIMATORS, get_estimator
from core.intervals import MODEL_ZERO, Observed, estimate, possible
from core.params import Params, make_params
from core.precision import BELOW, DECIDED, OPEN, PointTally, Precision, ShardStats, decide
from core.stats import clopper_pearson, wilson
from core.vectorized import STREAM_VERSION, shard_seed

TRUTHS_PATH = Path(__file__).resolve().parent / "data" / "coverage_truths.json"
METRICS = ("p_race", "p_bad", "p_hang", "p_timeout")
CLAIMED = 0.93
"""Coverage each cell must be consistent with."""
DELTA = 0.001
"""Chance that a cell with coverage >= CLAIMED (a case with error rate <= 5%) fails anyway."""


@dataclass(frozen=True)
class Regime:
    """A point of the model the intervals are checked at."""

    name: str
    params: dict[str, Any]
    note: str
    truth: dict[str, tuple[str, int]]
    """How each metric's truth is computed: ("naive" | "cmc", trials), ("analytic", 0) or ("zero", 0);
    p_bad is always the sum of the others."""
    trials: dict[str, int] = field(default_factory=dict)
    """Small-run trials per estimator where the default (ESTIMATOR_TRIALS) does not fit."""
    ci_reps: int = 200
    """Runs per cell in CI (the full run uses FULL_REPS)."""


ESTIMATOR_TRIALS: dict[str, int] = {"naive": 2000, "cmc": 1000}
"""Small-run trials per estimator: every regime runs under each (a new estimator is one more entry)."""
FULL_REPS = 2000

# the common race regime: CPUs stalled ~1 s clear right as the NMIs come, NMIs late by ~1 ms
_COMMON_RACE = {"p_stall": 0.3, "stall_median_us": 1.0e6, "stall_sigma": 0.05, "nmi_jitter_us": 1000.0}

REGIMES: tuple[Regime, ...] = (
    Regime("kexec-common-race", {"n_cpus": 8, "wait": 1, **_COMMON_RACE},
           "kexec path, races ~9e-3 (countable), hangs and timeouts impossible",
           {"p_race": ("naive", 30_000_000), "p_hang": ("zero", 0), "p_timeout": ("zero", 0)}),
    Regime("panic-common-timeout", {"n_cpus": 8, "wait": 0, "p_stall": 0.05, "wbinvd_us": 6000.0},
           "panic path, timeouts ~1e-2, races ~5e-7 (rare)",
           {"p_race": ("cmc", 200_000), "p_hang": ("zero", 0), "p_timeout": ("naive", 4_000_000)}),
    Regime("panic-issue23", {"n_cpus": 64, "wait": 0, "wbinvd_us": 3000.0},
           "issue 23's point: timeouts ~1e-4 (rarely seen in 1000 trials), races ~1e-7",
           {"p_race": ("cmc", 400_000), "p_hang": ("zero", 0), "p_timeout": ("naive", 4_000_000)},
           ci_reps=100),
    Regime("kexec-rare-race", {"n_cpus": 16, "wait": 1},
           "kexec path at the defaults: races ~1e-8, never seen by counting",
           {"p_race": ("cmc", 400_000), "p_hang": ("zero", 0), "p_timeout": ("zero", 0)}),
    Regime("early-flush-holdoffs", {"n_cpus": 16, "wait": 1, "mitigation": "early_flush", "p_nmi_delay": 0.05,
                                    "p_stall": 0.05},
           "the fix with NMI hold-offs: races ~3e-6 only through late NMIs (cmc's late-NMI integration)",
           {"p_race": ("cmc", 200_000), "p_hang": ("zero", 0), "p_timeout": ("zero", 0)}),
    Regime("none-holdoffs", {"n_cpus": 16, "wait": 1, "p_nmi_delay": 0.01, "p_stall": 0.05},
           "no fix, 1% of NMIs held off: races ~9e-7",
           {"p_race": ("cmc", 200_000), "p_hang": ("zero", 0), "p_timeout": ("zero", 0)}),
    Regime("kexec-unresponsive", {"n_cpus": 8, "wait": 1, "p_unresponsive": 1e-3},
           "dead CPUs on the kexec path: hangs 7e-3 (exact), races ~5e-9",
           {"p_race": ("cmc", 200_000), "p_hang": ("analytic", 0), "p_timeout": ("zero", 0)}),
    Regime("kexec-unresponsive-rare", {"n_cpus": 8, "wait": 1, "p_unresponsive": 1e-5},
           "hangs 7e-5 (exact): n p ~ 0.1, where Wilson's coverage dips to ~86%",
           {"p_race": ("cmc", 200_000), "p_hang": ("analytic", 0), "p_timeout": ("zero", 0)}),
    Regime("panic-unresponsive", {"n_cpus": 8, "wait": 0, "p_unresponsive": 1e-3},
           "dead CPUs on the panic path time out: timeouts ~7e-3",
           {"p_race": ("cmc", 200_000), "p_hang": ("zero", 0), "p_timeout": ("naive", 2_000_000)}),
)


def regime(name: str) -> Regime:
    return next(r for r in REGIMES if r.name == name)


def params_of(r: Regime) -> Params:
    return make_params(r.params)


def small_trials(r: Regime, estimator: str) -> int:
    return r.trials.get(estimator, ESTIMATOR_TRIALS[estimator])


def _entropy(*names: str) -> int:
    return zlib.crc32("/".join(names).encode())


def observed(acc, p: Params) -> Observed:
    """A shard's summary as core.intervals sees it (what `outcomes` pools for a point of one shard)."""
    c = acc.counts
    race_cmc = None
    if get_estimator(acc.estimator).integrates_race and acc.cmc is not None:
        race_cmc = (acc.cmc.n, acc.cmc.mean_race, acc.cmc.var_race)
    hang, timeout = possible(p.wait, p.p_unresponsive)
    return Observed(c.trials, c.count("race"), c.count("hang"), c.count("timeout"), race_cmc, p.n_cpus, hang, timeout)


# ---- truths ---------------------------------------------------------------------------------


def _fingerprint(r: Regime) -> dict[str, Any]:
    return {"params": params_of(r).model_dump(), "stream_version": STREAM_VERSION}


def compute_truths(regimes: Iterable[Regime] = REGIMES, log=print) -> dict[str, Any]:
    """Every regime's truths, with how each was computed (minutes: the large runs)."""
    out: dict[str, Any] = {}
    for r in regimes:
        p = params_of(r)
        metrics: dict[str, Any] = {}
        runs: dict[tuple[str, int], Any] = {}
        for metric, (how, n) in r.truth.items():
            if how in ("naive", "cmc"):
                if (how, n) not in runs:
                    log(f"  {r.name}: {how} run of {n:,} trials ...")
                    runs[(how, n)] = get_estimator(how).run_shard(p, n, np.random.SeedSequence(
                        [_entropy(r.name, "truth", how), 10**9]))
                acc = runs[(how, n)]
                if how == "cmc" and metric == "p_race":
                    lo, hi = acc.cmc.interval("race")
                    metrics[metric] = {"value": acc.cmc.mean_race, "lo": lo, "hi": hi,
                                       "how": f"cmc run of {n:,} trials, mean of the per-trial race values, "
                                              "CLT 95% interval"}
                else:
                    k = acc.counts.count(metric[2:])
                    lo, hi = clopper_pearson(k, n)
                    metrics[metric] = {"value": k / n, "lo": lo, "hi": hi,
                                       "how": f"naive run of {n:,} trials: {k:,} {metric[2:]}s, exact 95% interval"}
            elif how == "analytic":
                if metric != "p_hang" or p.wait != 1:
                    raise ValueError(f"{r.name}: no analytic truth for {metric}")
                v = -math.expm1((p.n_cpus - 1) * math.log1p(-p.p_unresponsive))
                metrics[metric] = {"value": v, "lo": v, "hi": v,
                                   "how": "exact: a hang is any of the n_cpus - 1 remote CPUs dead, "
                                          "1 - (1 - p_unresponsive)^(n_cpus - 1)"}
            elif how == "zero":
                hang, timeout = possible(p.wait, p.p_unresponsive)
                if {"p_hang": hang, "p_timeout": timeout}[metric]:
                    raise ValueError(f"{r.name}: {metric} is possible here, it has no zero truth")
                metrics[metric] = {"value": 0.0, "lo": 0.0, "hi": 0.0, "how": "0 by the model (core.intervals.possible)"}
        parts = [metrics[m] for m in ("p_race", "p_hang", "p_timeout")]
        metrics["p_bad"] = {"value": sum(x["value"] for x in parts), "lo": sum(x["lo"] for x in parts),
                            "hi": sum(x["hi"] for x in parts), "how": "p_race + p_hang + p_timeout (exclusive outcomes)"}
        out[r.name] = {**_fingerprint(r), "metrics": metrics}
    return out


def load_truths(path: Path = TRUTHS_PATH) -> dict[str, Any]:
    """The stored truths; raises if one was computed for other parameters or another random stream."""
    data = json.loads(path.read_text())
    for r in REGIMES:
        if r.name not in data:
            raise KeyError(f"no stored truth for regime {r.name}: run python benchmarks/coverage.py --truths")
        if {k: data[r.name][k] for k in ("params", "stream_version")} != _fingerprint(r):
            raise ValueError(f"stored truth of {r.name} is for other parameters or another stream: recompute it")
    return data


# ---- coverage ---------------------------------------------------------------------------------


def max_misses(reps: int, miss_rate: float = 1 - CLAIMED) -> int:
    """Largest number of misses consistent with a miss rate <= miss_rate: Binomial(reps, rate)'s 1 - DELTA quantile."""
    return int(sst.binom.ppf(1 - DELTA, reps, miss_rate))


@dataclass
class Cell:
    regime: str
    estimator: str
    metric: str
    trials: int
    truth: float
    reps: int = 0
    misses: int = 0
    wilson_misses: int = 0  # counted metrics: what Wilson's interval would have missed
    old_misses: int = 0  # cmc p_bad: what the interval of the per-trial bad values (before issue 23) missed
    method: str = ""
    half_widths: list[float] = field(default_factory=list)
    edge: int = 0  # runs whose interval ends inside the truth's own interval (coverage ambiguous)

    @property
    def coverage(self) -> float:
        return 1.0 - self.misses / self.reps

    @property
    def trivial(self) -> bool:
        return self.method == MODEL_ZERO

    @property
    def passes(self) -> bool:
        return self.misses <= max_misses(self.reps)

    @property
    def kind(self) -> str:
        return "zero" if self.trivial else "rare" if self.truth * self.trials < 1 else "common"

    def row(self) -> dict[str, Any]:
        lo, hi = clopper_pearson(self.reps - self.misses, self.reps)
        return {"regime": self.regime, "estimator": self.estimator, "metric": self.metric, "kind": self.kind,
                "method": self.method, "trials": self.trials, "truth": self.truth, "reps": self.reps,
                "coverage": self.coverage, "coverage_lo": lo, "coverage_hi": hi, "max_misses": max_misses(self.reps),
                "misses": self.misses, "passes": self.passes,
                "wilson_coverage": None if self.method not in ("counted",) else 1 - self.wilson_misses / self.reps,
                "old_coverage": None if not (self.estimator == "cmc" and self.metric == "p_bad")
                else 1 - self.old_misses / self.reps,
                "median_half_width": statistics.median(self.half_widths) if self.half_widths else None,
                "edge": self.edge}


def run_cells(r: Regime, estimator: str, reps: int, truths: dict[str, Any]) -> list[Cell]:
    """R small runs of regime r under `estimator`: one Cell per metric."""
    p = params_of(r)
    est = ESTIMATORS[estimator]
    n = small_trials(r, estimator)
    tm = truths[r.name]["metrics"]
    cells = {m: Cell(r.name, estimator, m, n, tm[m]["value"]) for m in METRICS}
    ent = _entropy(r.name, estimator)
    for rep in range(reps):
        acc = est.run_shard(p, n, np.random.SeedSequence([ent, rep]))
        obs = observed(acc, p)
        for m, c in cells.items():
            e = estimate(m, obs)
            t, tlo, thi = tm[m]["value"], tm[m]["lo"], tm[m]["hi"]
            c.reps += 1
            c.method = e.method
            c.misses += not (e.lo <= t <= e.hi)
            c.edge += (tlo <= e.lo <= thi) or (tlo <= e.hi <= thi) if thi > tlo else 0
            c.half_widths.append((e.hi - e.lo) / 2)
            if e.method == "counted":
                wl, wh = wilson(obs.count(m), obs.trials)
                c.wilson_misses += not (wl <= t <= wh)
            if m == "p_bad" and acc.cmc is not None:
                ol, oh = acc.cmc.interval("bad")
                c.old_misses += not (ol <= t <= oh)
    return list(cells.values())


def truth_precision(cell: Cell, truths: dict[str, Any]) -> float:
    """The truth's own 95% half-width over the cell's median half-width (should be small: <= 0.1)."""
    t = truths[cell.regime]["metrics"][cell.metric]
    hw = statistics.median(cell.half_widths) if cell.half_widths else 0.0
    return 0.0 if t["hi"] == t["lo"] else ((t["hi"] - t["lo"]) / 2) / hw if hw > 0 else math.inf


# ---- adaptive decisions -----------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptiveCase:
    name: str
    regime: str
    estimator: str
    metric: str
    shard_trials: int
    max_trials: int
    ci_reps: int = 100
    ci_max_trials: int | None = None


ADAPTIVE: tuple[AdaptiveCase, ...] = (
    AdaptiveCase("naive p_race, target = truth", "kexec-common-race", "naive", "p_race", 500, 32_000,
                  ci_max_trials=16_000),
    AdaptiveCase("naive p_hang, exact truth", "kexec-unresponsive", "naive", "p_hang", 500, 32_000,
                  ci_max_trials=16_000),
    AdaptiveCase("cmc p_race (CLT), target = truth", "kexec-common-race", "cmc", "p_race", 250, 8_000,
                  ci_reps=60, ci_max_trials=4_000),
    AdaptiveCase("cmc p_bad (cmc+counted), target = truth", "panic-common-timeout", "cmc", "p_bad", 250, 8_000,
                  ci_reps=60, ci_max_trials=4_000),
)


@dataclass
class AdaptiveResult:
    case: AdaptiveCase
    truth: float
    reps: int = 0
    wrong: int = 0  # decided below or above target (the target is the truth)
    wrong_old: int = 0  # the same sequences under the old rule: 95% at every look
    looks: int = 0
    trials: list[int] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.wrong / self.reps

    @property
    def passes(self) -> bool:
        return self.wrong <= max_misses(self.reps, 0.05)

    def row(self) -> dict[str, Any]:
        lo, hi = clopper_pearson(self.wrong, self.reps)
        return {"case": self.case.name, "estimator": self.case.estimator, "metric": self.case.metric,
                "truth": self.truth, "reps": self.reps, "looks": self.looks, "wrong": self.wrong,
                "error_rate": self.error_rate, "error_lo": lo, "error_hi": hi,
                "max_wrong": max_misses(self.reps, 0.05), "passes": self.passes,
                "old_error_rate": self.wrong_old / self.reps,
                "median_trials": statistics.median(self.trials) if self.trials else None}


def wave_bounds_of(shard_trials: int, min_trials: int, max_trials: int) -> list[int]:
    """sweeps.waves.wave_bounds of a spec with these sizes (built through the spec parser)."""
    from sweeps.spec import parse_spec
    from sweeps.waves import wave_bounds

    s = parse_spec(f'name = "cov"\nseed = 1\ntrials = "auto"\nshard_trials = {shard_trials}\n'
                   f"[precision]\ntarget = 0.5\nmax_trials = {max_trials}\nmin_trials = {min_trials}\n")
    return wave_bounds(s)


def run_adaptive(case: AdaptiveCase, reps: int, truths: dict[str, Any], max_trials: int | None = None) -> AdaptiveResult:
    r = regime(case.regime)
    p = params_of(r)
    est = ESTIMATORS[case.estimator]
    truth = truths[r.name]["metrics"][case.metric]["value"]
    mx = max_trials or case.max_trials
    rule = Precision(metric=case.metric, target=truth, max_trials=mx, min_trials=case.shard_trials)
    bounds = wave_bounds_of(case.shard_trials, case.shard_trials, mx)
    res = AdaptiveResult(case, truth, looks=len(bounds))
    ent = _entropy(case.name, "adaptive")
    for s in range(reps):
        tally = PointTally.for_params(p.model_dump())
        new, old = OPEN, OPEN
        have = 0
        for b in bounds:
            for k in range(have, b):
                acc = est.run_shard(p, case.shard_trials, shard_seed(ent * 100_003 + s, k))
                c = acc.counts
                cmc = acc.cmc
                tally.add(k, ShardStats(c.trials, c.count("race"), c.count("hang"), c.count("timeout"), acc.estimator,
                                        *((cmc.mean_race, cmc.var_race, cmc.mean_bad, cmc.var_bad) if cmc else ())))
            have = b
            if new not in DECIDED:
                new = tally.status(rule, upto=b)
                if new in DECIDED:
                    res.trials.append(tally.trials)
            if old not in DECIDED:
                e95 = tally.estimate(case.metric, upto=b)
                old = decide(e95, rule, e95)
            if new in DECIDED and old in DECIDED:
                break
        if new not in DECIDED:
            res.trials.append(tally.trials)
        res.reps += 1
        res.wrong += new in (BELOW, "above target")
        res.wrong_old += old in (BELOW, "above target")
    return res
