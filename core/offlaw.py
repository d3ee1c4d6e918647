"""The law of off_i, the irqs-off time (MODEL.md): CDF and accurate window masses.

off = LogNormal(stall_median_us, stall_sigma) with prob. p_stall, else
Exponential(irq_off_mean_us); a degenerate stall law (sigma = 0 or median = 0) is an
atom, and so is Exponential(mean = 0). The cmc estimator integrates CPU i's clear
time over this law, so it needs P(off in (y1, y1 + width)) for windows of a few µs
at ~1e6 µs without cancellation (`cont_mass`) and the CDF at the atoms (`cdf`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .numerics import ndtr_diff, norm_sf
from .params import Params


@dataclass(frozen=True)
class OffLaw:
    """off = LogNormal(m, sigma) w.p. p_stall, else Exponential(mu); atoms where degenerate."""

    p_stall: float
    m: float
    sigma: float
    mu: float

    @staticmethod
    def of(p: Params) -> "OffLaw":
        """The irqs-off law of a point."""
        return OffLaw(p.p_stall, p.stall_median_us, p.stall_sigma, p.irq_off_mean_us)

    @property
    def stall_cont(self) -> bool:
        """The stall part has a density."""
        return self.p_stall > 0 and self.sigma > 0 and self.m > 0

    @property
    def stall_atom(self) -> bool:
        """The stall part is an atom: LogNormal(m, 0) = m; LogNormal(0, s) = 0."""
        return self.p_stall > 0 and not (self.sigma > 0 and self.m > 0)

    @property
    def exp_cont(self) -> bool:
        """The short (exponential) part has a density."""
        return self.p_stall < 1 and self.mu > 0

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """F_off(x) = P(off <= x) (right-continuous, atoms included), x >= 0."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros_like(x)
        if self.p_stall > 0:
            if self.stall_cont:
                with np.errstate(divide="ignore"):
                    z = np.log(x / self.m) / self.sigma
                out += self.p_stall * (1.0 - norm_sf(z))
            else:
                out += self.p_stall * (x >= self.m)
        if self.p_stall < 1:
            if self.mu > 0:
                out += (1.0 - self.p_stall) * -np.expm1(-x / self.mu)
            else:
                out += (1.0 - self.p_stall) * (x >= 0)
        return out

    def cont_mass(self, y1: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Continuous (atom-free) part of P(off in (y1, y1 + width)), y1 >= 0, width > 0."""
        out = np.zeros_like(y1)
        if self.stall_cont:
            with np.errstate(divide="ignore", over="ignore"):
                z1 = np.log(y1 / self.m) / self.sigma
                dz = np.log1p(width / y1) / self.sigma
                z2 = np.log((y1 + width) / self.m) / self.sigma  # used only where y1 = 0
            out += self.p_stall * ndtr_diff(z1, dz, z2)
        if self.exp_cont and y1.size and y1.min() < 750.0 * self.mu:  # exp(-750) underflows to 0
            out += (1.0 - self.p_stall) * np.exp(-y1 / self.mu) * -np.expm1(-width / self.mu)
        return out
