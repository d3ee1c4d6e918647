"""Independent recomputation of the adaptive stop rule (SCHEMA.md, trials = "auto") for tests.

Written from the spec's words, not from core.precision / core.intervals: the exact binomial
(Clopper-Pearson) interval as scipy's beta quantiles, the pooled cmc mean/variance from the
per-shard (n, mean, var) by the textbook decomposition with a CLT interval from scipy's normal
quantile, the look level as 1 - 0.05 / (1 + ceil(log2(max_trials / min_trials))) with math.log2,
and the rule's order (below, above on the look interval; precise on the 95% one; exhausted).
"""

from __future__ import annotations

import math

from scipy import stats as sst

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def cp(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson from scipy's beta quantiles (n = 0: (0, 1))."""
    if n == 0:
        return 0.0, 1.0
    a = 1.0 - conf
    lo = 0.0 if k == 0 else float(sst.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(sst.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def looks(rule: dict) -> int:
    r = rule["max_trials"] / rule["min_trials"]
    return 1 + (math.ceil(math.log2(r) - 1e-12) if r > 1 else 0)


def look_conf(rule: dict) -> float:
    return 1.0 - 0.05 / looks(rule)


def pooled(parts: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """(N, mean, variance of the mean) of shards given as (n, mean, variance of the mean)."""
    big = sum(n for n, _, _ in parts)
    mean = sum(n * m for n, m, _ in parts) / big
    within = sum((n - 1) * n * v for n, _, v in parts)  # sum of squared deviations inside shards
    between = sum(n * (m - mean) ** 2 for n, m, _ in parts)
    return big, mean, (within + between) / (big - 1) / big


def status(p: float, lo: float, hi: float, look_lo: float, look_hi: float, n: int, rule: dict) -> str:
    if n < rule["min_trials"]:
        return "open"
    t = rule.get("target")
    if t is not None and look_hi < t:
        return "below target"
    if t is not None and look_lo > t:
        return "above target"
    r = rule.get("rel_half_width")
    if r is not None and p > 0 and (hi - lo) / 2 <= r * p:
        return "precise"
    if n >= rule["max_trials"]:
        return "budget exhausted"
    return "open"


def naive_status(k: int, n: int, rule: dict) -> str:
    return status(k / n, *cp(k, n), *cp(k, n, look_conf(rule)), n, rule)


def clt(m: float, v: float, conf: float) -> tuple[float, float]:
    half = float(sst.norm.ppf(0.5 + conf / 2)) * math.sqrt(v)
    return max(0.0, m - half), m + half


def cmc_status(m: float, v: float, n: int, rule: dict) -> str:
    """The rule on a cmc estimate with sample variance > 0 (CLT intervals; the 1e-9 floor is negligible)."""
    return status(m, *clt(m, v, 0.95), *clt(m, v, look_conf(rule)), n, rule)


def ref_estimate(metric: str, n: int, race: int, hang: int, timeout: int, cmc: tuple[int, float, float] | None,
                 n_cpus: int, wait: int, p_unresponsive: float, conf: float = 0.95) -> tuple[float, float, float, str]:
    """(p, lo, hi, method) of a metric as core/README.md "Intervals" words it, from scratch: counted
    outcomes Clopper-Pearson (scipy), 0 where MODEL.md rules them out and none was seen; p_race the cmc
    interval (core.estimators.cmc.stats.estimate_interval, the cmc definition tested in test_cmc); p_bad
    under cmc the race part plus the counted hang + timeout part, each at 1 - (1 - conf) / 2."""
    from core.estimators.cmc.stats import estimate_interval

    can_hang = wait == 1 and p_unresponsive > 0  # only a dead CPU hangs, only on the kexec path
    can_timeout = wait == 0  # only the panic path has a deadline

    def counted(k: int, can: bool, c: float) -> tuple[float, float, float, str]:
        if not can and k == 0:
            return 0.0, 0.0, 0.0, "zero by model"
        return (k / n, *cp(k, n, c), "counted")

    def race_cmc(c: float) -> tuple[float, float, float, str]:
        big_n, m, v = cmc  # type: ignore[misc]
        lo, hi = estimate_interval(m, v, big_n, c, n_cpus - 1)
        return m, lo, hi, "cmc"

    if metric == "p_hang":
        return counted(hang, can_hang, conf)
    if metric == "p_timeout":
        return counted(timeout, can_timeout, conf)
    if cmc is None:
        return counted(race if metric == "p_race" else race + hang + timeout, True, conf)
    if metric == "p_race" or (hang + timeout == 0 and not can_hang and not can_timeout):
        return race_cmc(conf)
    half = 1 - (1 - conf) / 2
    rp, rlo, rhi, _ = race_cmc(half)
    k = hang + timeout
    clo, chi = cp(k, n, half)
    return rp + k / n, rlo + clo, rhi + chi, "cmc+counted"
