"""Walker's alias method (Vose's construction): one uniform -> a draw from a finite law, O(1).

The late estimator draws, per trial, the counts (late CPUs, CPUs of each minor component)
from their joint multinomial law, and, per late CPU, a piece of its WBINVD posterior's
envelope: tables of 1e2..1e6 outcomes where a binary search would cost ~5 ns a level.
Probabilities are represented to ~1e-16 / L each (L outcomes), so the law drawn is the
given one to a total variation below ~1e-15.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alias:
    prob: np.ndarray  # keep-probability of each bucket
    alias: np.ndarray  # the outcome a bucket gives otherwise

    @staticmethod
    def of(weights: np.ndarray) -> "Alias":
        """The alias table of a law proportional to `weights` (>= 0, not all 0)."""
        w = np.asarray(weights, dtype=np.float64)
        n = w.size
        scaled = w * (n / w.sum())
        prob = np.ones(n)
        alias = np.arange(n, dtype=np.intp)
        small = list(np.flatnonzero(scaled < 1.0))
        large = list(np.flatnonzero(scaled >= 1.0))
        sc = scaled.tolist()
        while small and large:
            s = small.pop()
            g = large[-1]
            prob[s] = sc[s]
            alias[s] = g
            sc[g] = (sc[g] + sc[s]) - 1.0
            if sc[g] < 1.0:
                large.pop()
                small.append(g)
        for i in small + large:  # leftovers are 1 up to rounding
            prob[i] = 1.0
        return Alias(prob, alias)

    @property
    def size(self) -> int:
        return int(self.prob.size)

    def draw(self, u: np.ndarray) -> np.ndarray:
        """Outcomes for uniforms u in [0, 1)."""
        x = u * self.prob.size
        i = x.astype(np.intp)
        np.minimum(i, self.prob.size - 1, out=i)
        return np.where(x - i < np.take(self.prob, i), i, np.take(self.alias, i))
