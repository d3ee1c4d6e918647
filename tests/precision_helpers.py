"""Independent recomputation of the adaptive stop rule (SCHEMA.md, trials = "auto") for tests.

Written from the spec's words, not from core.precision: Wilson's formula in plain math,
the pooled cmc mean/variance from the per-shard (n, mean, var) by the textbook
decomposition, and the rule's order (below, above, precise, exhausted).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson95(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + Z95**2 / n
    c = (p + Z95**2 / (2 * n)) / d
    h = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / d
    lo = 0.0 if k == 0 else max(0.0, c - h)
    hi = 1.0 if k == n else min(1.0, c + h)
    return lo, hi


def pooled(parts: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """(N, mean, variance of the mean) of shards given as (n, mean, variance of the mean)."""
    big = sum(n for n, _, _ in parts)
    mean = sum(n * m for n, m, _ in parts) / big
    within = sum((n - 1) * n * v for n, _, v in parts)  # sum of squared deviations inside shards
    between = sum(n * (m - mean) ** 2 for n, m, _ in parts)
    return big, mean, (within + between) / (big - 1) / big


def status(p: float, lo: float, hi: float, n: int, rule: dict) -> str:
    if n < rule["min_trials"]:
        return "open"
    t = rule.get("target")
    if t is not None and hi < t:
        return "below target"
    if t is not None and lo > t:
        return "above target"
    r = rule.get("rel_half_width")
    if r is not None and p > 0 and (hi - lo) / 2 <= r * p:
        return "precise"
    if n >= rule["max_trials"]:
        return "budget exhausted"
    return "open"


def naive_status(k: int, n: int, rule: dict) -> str:
    lo, hi = wilson95(k, n)
    return status(k / n, lo, hi, n, rule)
