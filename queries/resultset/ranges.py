"""RangeSet: a set of task ids kept as sorted disjoint ranges (how the manifest lists tasks)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator


class RangeSet:
    """A set of non-negative ints kept as sorted disjoint inclusive ranges [first, last]."""

    def __init__(self, ranges: Iterable[Iterable[int] | int] = ()) -> None:
        pairs = []
        for r in ranges:  # [first, last] pairs; a bare int is accepted as [x, x]
            a, b = (r, r) if isinstance(r, int) else (int(x) for x in r)
            if not 0 <= a <= b:
                raise ValueError(f"bad range [{a}, {b}]")
            pairs.append((a, b))
        self._starts: list[int] = []
        self._ends: list[int] = []
        for a, b in sorted(pairs):
            if self._starts and a <= self._ends[-1] + 1:
                self._ends[-1] = max(self._ends[-1], b)
            else:
                self._starts.append(a)
                self._ends.append(b)

    def add(self, x: int) -> None:
        s, e = self._starts, self._ends
        i = bisect_left(s, x)  # s[i-1] < x <= s[i]
        if i < len(s) and s[i] == x:
            return
        if i > 0 and e[i - 1] >= x:
            return
        join_left = i > 0 and e[i - 1] == x - 1
        join_right = i < len(s) and s[i] == x + 1
        if join_left and join_right:
            e[i - 1] = e[i]
            del s[i], e[i]
        elif join_left:
            e[i - 1] = x
        elif join_right:
            s[i] = x
        else:
            s.insert(i, x)
            e.insert(i, x)

    def update(self, other: Iterable[int]) -> None:
        for x in other:
            self.add(x)

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, int):
            return False
        i = bisect_left(self._starts, x + 1) - 1
        return i >= 0 and self._ends[i] >= x

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in zip(self._starts, self._ends))

    def __iter__(self) -> Iterator[int]:
        for a, b in zip(self._starts, self._ends):
            yield from range(a, b + 1)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def intersection(self, other: RangeSet) -> RangeSet:
        """The ids in both (range by range: cost follows the number of ranges, not of ids)."""
        out: list[tuple[int, int]] = []
        i = j = 0
        a, b = other._starts, other._ends
        while i < len(self._starts) and j < len(a):
            lo, hi = max(self._starts[i], a[j]), min(self._ends[i], b[j])
            if lo <= hi:
                out.append((lo, hi))
            if self._ends[i] < b[j]:
                i += 1
            else:
                j += 1
        return RangeSet(out)

    def difference(self, other: RangeSet) -> RangeSet:
        """The ids in this set and not in ``other`` (range by range)."""
        out: list[tuple[int, int]] = []
        for s, e in zip(self._starts, self._ends):
            cur = s
            j = max(bisect_left(other._ends, s), 0)
            while cur <= e and j < len(other._starts) and other._starts[j] <= e:
                if other._starts[j] > cur:
                    out.append((cur, other._starts[j] - 1))
                cur = max(cur, other._ends[j] + 1)
                j += 1
            if cur <= e:
                out.append((cur, e))
        return RangeSet(out)

    def ranges(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self._starts, self._ends)]

    def describe(self, limit: int = 6) -> str:
        """'3, 7-9, 12' (at most `limit` ranges, then '…')."""
        parts = [str(a) if a == b else f"{a}-{b}" for a, b in zip(self._starts, self._ends)]
        return ", ".join(parts[:limit]) + (", …" if len(parts) > limit else "")
