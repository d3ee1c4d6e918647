"""Boundary search (`[search] n_cpus = [lo, hi]`): the largest n_cpus that stays below the target.

For every combination of the spec's axes (n_cpus excluded), bisection on integer n_cpus
between the limits, each probe a point run adaptively (sweeps.waves, rule [precision]):
a probe *passes* when it is decided `below target` (its 95% upper bound is under the
target), anything else (above target, budget exhausted, precise but spanning the
target) *fails*: a capacity limit must be shown, not assumed.

1. Probe lo and hi (in parallel). lo fails: the boundary is below the search range;
   hi passes: it is at or above hi. Otherwise a = lo passes and b = hi fails.
2. While the bracket is wider than the resolution, probe the geometric midpoint
   round(sqrt(a b)) (n_cpus spans decades) and move a or b.
3. Resolution: +-1 CPU or +-5%, whichever is coarser: stop once
   (b - a) / 2 <= max(1, 0.05 (a + b) / 2). The result is a (largest passing n_cpus
   probed) and b (smallest failing one).

The search assumes p increases with n_cpus; it checks that on its probes and flags a
combination where a probe at a smaller n_cpus lies entirely above a probe at a larger
one (lo(n1) > hi(n2) for n1 < n2).

Determinism: a probe is added only when the probes it depends on are decided, and a
decision depends only on complete waves of stored rows (sweeps.waves), so the set of
probes and every stored row are functions of the spec. Probe point indices are
`combination index x (hi - lo + 1) + (n_cpus - lo)`, so task ids are fixed too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from core.precision import BELOW, Estimate
from sweeps.grid import Point, iter_points, point_at
from sweeps.spec import SweepSpec
from sweeps.waves import WavePlan

__all__ = ["BoundarySearch", "Bracket", "midpoint", "resolved"]

REL_RESOLUTION = 0.05


def resolved(a: int, b: int) -> bool:
    """Bracket [a passes, b fails] narrow enough: +-1 CPU or +-5%, whichever is coarser."""
    return (b - a) / 2 <= max(1.0, REL_RESOLUTION * (a + b) / 2)


def midpoint(a: int, b: int) -> int:
    """The next probe strictly inside (a, b): the rounded geometric mean."""
    m = math.floor(math.sqrt(a * b) + 0.5)
    return min(max(m, a + 1), b - 1)


@dataclass
class Bracket:
    """The search state of one combination of the other axes."""

    combo: Point
    probes: dict[int, tuple[str, Estimate]] = field(default_factory=dict)
    pending: set[int] = field(default_factory=set)
    done: bool = False

    def passing(self) -> list[int]:
        return sorted(n for n, (s, _) in self.probes.items() if s == BELOW)

    def failing(self) -> list[int]:
        return sorted(n for n, (s, _) in self.probes.items() if s != BELOW)


class BoundarySearch:
    """Drives a dynamic WavePlan: probes are added as earlier probes are decided."""

    def __init__(self, spec: SweepSpec, **plan_kw: Any) -> None:
        if spec.search is None or spec.precision is None:
            raise ValueError("BoundarySearch needs a spec with [search] and [precision]")
        self.spec = spec
        self.rule = spec.precision
        self.lo, self.hi = spec.search.lo, spec.search.hi
        self.width = self.hi - self.lo + 1
        self.plan = WavePlan(spec, dynamic=True, on_decided=self._decided, **plan_kw)
        self.brackets: dict[int, Bracket] = {}
        for c in iter_points(spec):
            self.brackets[c.index] = Bracket(c)
            self._probe(c.index, self.lo)
            self._probe(c.index, self.hi)

    # ---- probes ----------------------------------------------------------------------------
    def probe_point(self, combo_index: int, n_cpus: int) -> Point:
        """The point of a probe: the combination with n_cpus set (canonical id and seed as a grid point)."""
        one = self.spec.model_copy(update={"base": {**self.spec.base, "n_cpus": int(n_cpus)}})
        p = point_at(one, combo_index)
        return dataclasses.replace(p, index=combo_index * self.width + (n_cpus - self.lo))

    def _probe(self, ci: int, n: int) -> None:
        b = self.brackets[ci]
        if n in b.probes or n in b.pending:
            return
        b.pending.add(n)
        self.plan.add_point(self.probe_point(ci, n))

    def _decided(self, point: Point, status: str) -> None:
        ci, off = divmod(point.index, self.width)
        n = self.lo + off
        b = self.brackets[ci]
        b.pending.discard(n)
        b.probes[n] = (status, self.plan.tallies[point.index].estimate(self.rule.metric))
        if b.pending:
            return  # both ends first
        if self.lo not in b.passing() or self.hi in b.passing():
            b.done = True
            return
        a, z = max(b.passing()), min(b.failing())
        if a > z or resolved(a, z):  # a > z: not monotone; stop and flag (report)
            b.done = True
            return
        self._probe(ci, midpoint(a, z))

    # ---- results ---------------------------------------------------------------------------
    def report(self) -> list[dict[str, Any]]:
        """One row per combination: the other axes, the boundary, its bracket, the probes, the flags."""
        metric = self.rule.metric
        target = self.rule.target
        rows = []
        for ci in sorted(self.brackets):
            b = self.brackets[ci]
            row: dict[str, Any] = {a.name: b.combo.values[a.name] for a in self.spec.axes}
            passing, failing = b.passing(), b.failing()
            first_fail = min(failing) if failing else None
            ok = max((n for n in passing if first_fail is None or n < first_fail), default=None)
            probes = sorted(b.probes.items())
            monotone = all(
                not (e1.lo > e2.hi) for (n1, (_, e1)), (n2, (_, e2)) in _pairs(probes)
            ) and not any(n > first_fail for n in passing if first_fail is not None)
            if not b.done:
                result = "open"
            elif ok is None:
                result = f"fails at the lower limit n_cpus={self.lo}"
            elif first_fail is None:
                result = f"passes at the upper limit n_cpus={self.hi}"
            else:
                result = f"largest passing n_cpus={ok}, first failing {first_fail}"
            row.update({
                "max_n_cpus": ok,
                "fails_at_n_cpus": first_fail,
                "probes": len(probes),
                "probe_n_cpus": [n for n, _ in probes],
                "probe_status": [s for _, (s, _) in probes],
                f"{metric}_hi_at_max": None if ok is None else b.probes[ok][1].hi,
                "target": target,
                "unresolved_probes": sum(1 for _, (s, _) in probes if s == "budget exhausted"),
                "monotone": monotone,
                "result": result,
            })
            rows.append(row)
        return rows


def _pairs(probes):
    for i, x in enumerate(probes):
        for y in probes[i + 1:]:
            yield x, y
