"""Random draws of the model (MODEL.md "One trial"): the per-CPU laws and explicit draw arrays.

The vectorized core draws lazily (the NMI-path draws `nmi`, `w2` and the NMI
hold-offs only for CPUs that get an NMI); `Draws` holds every per-CPU draw explicitly so that two
implementations can be fed the same numbers and compared trial for trial, and so
that `replay` can print one trial's timeline.

Model revision 2 (MODEL.md "Model revision 2") adds CPU 0's flag and flush (`dirty0`, `w0`, one per
trial) and, for the early flush as an IPI, each remote CPU's own IPI latency and irqs-off time
(`ipi_pre`, `off_pre`). They are drawn by `draw_rev2` after every draw revision 1 makes, and only
where they can matter (kexec path, `wait = 1`), so a revision-1 point consumes exactly the stream it
always did.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .params import Params


@dataclass(frozen=True)
class Draws:
    """Per-CPU draws, arrays of shape (trials, n_cpus - 1); column j is CPU j + 1.

    `dirty` is the flag before `early_flush` clears it; `w2` already includes
    `rewbinvd_factor`. `nmi` is the whole NMI latency, hold-off included
    (MODEL.md `nmi_i`); `hold` is the hold-off `D_i` inside it (0 when none; not
    read by the simulators, kept so replay can show it; None means all 0).
    `nmi`, `w2` and `hold` may be NaN where no NMI was sent.

    Revision 2 (None where a point does not use them, e.g. every revision-1 point):
    `dirty0` (shape (trials,)) is CPU 0's flag before the early flush clears it and `w0` its
    WBINVD length without contention (MODEL.md `w_0`; the early flush scales it by
    `Params.wbinvd_contention_factor`), both needed on the kexec path (`wait = 1`);
    `ipi_pre` and `off_pre` (trials, n_cpus - 1) are the function-call IPI latency and
    irqs-off time of each remote CPU in the early flush (`ipi'_i`, `off'_i`), needed when
    `Params.flush_ipi`.
    """

    ipi: np.ndarray
    off: np.ndarray
    dirty: np.ndarray
    w: np.ndarray
    w2: np.ndarray
    nmi: np.ndarray
    dead: np.ndarray
    hold: np.ndarray = None  # type: ignore[assignment]  # None -> zeros (no hold-offs)
    dirty0: np.ndarray | None = None
    w0: np.ndarray | None = None
    ipi_pre: np.ndarray | None = None
    off_pre: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.hold is None:
            object.__setattr__(self, "hold", np.zeros(np.shape(self.nmi)))

    def row(self, t: int) -> "Draws":
        """The draws of trial t alone, as a batch of one."""
        return Draws(**{f: _take(getattr(self, f), t) for f in _FIELDS})  # type: ignore[arg-type]

    def to_lists(self) -> dict[str, Any]:
        """Plain Python values of the first trial (for JSON and the scalar reference): per-CPU
        lists, and `dirty0`/`w0` as scalars; revision-2 draws a point does not use are left out."""
        return {f: getattr(self, f)[0].tolist() for f in _FIELDS if getattr(self, f) is not None}

    def with_rev2(self, extra: "Rev2Draws") -> "Draws":
        """These draws with the revision-2 ones (`draw_rev2`) filled in."""
        return replace(self, **{f: getattr(extra, f) for f in REV2_FIELDS})

    def rev2(self) -> "Rev2Draws":
        """The revision-2 draws of this batch (None where absent)."""
        return Rev2Draws(*(getattr(self, f) for f in REV2_FIELDS))


def _take(a: np.ndarray | None, t: int) -> np.ndarray | None:
    return None if a is None else a[t : t + 1].copy()


REV2_FIELDS = ("dirty0", "w0", "ipi_pre", "off_pre")
_FIELDS = ("ipi", "off", "dirty", "w", "w2", "nmi", "dead", "hold", *REV2_FIELDS)


@dataclass(frozen=True)
class Rev2Draws:
    """The draws model revision 2 adds (see `Draws`); None where the point does not use them."""

    dirty0: np.ndarray | None = None
    w0: np.ndarray | None = None
    ipi_pre: np.ndarray | None = None
    off_pre: np.ndarray | None = None

    def need(self, p: Params) -> "Rev2Draws":
        """Self, or ValueError naming the draws a revision-2 point needs that are missing."""
        want = [f for f, used in (("dirty0", p.cpu0_flush or p.flush_ipi), ("w0", p.cpu0_flush or p.flush_ipi),
                                  ("ipi_pre", p.flush_ipi), ("off_pre", p.flush_ipi)) if used]
        missing = [f for f in want if getattr(self, f) is None]
        if missing:
            raise ValueError(f"model_rev = 2 with mitigation = {p.mitigation}, wait = {p.wait} needs the draws "
                             f"{', '.join(missing)} (Draws.{missing[0]})")
        return self


def exponential(rng: np.random.Generator, mean: float, size) -> np.ndarray:
    """Exponential(mean) draws; mean 0 gives zeros without consuming the stream."""
    if mean == 0.0:
        return np.zeros(size)
    x = rng.standard_exponential(size)
    x *= mean
    return x


def lognormal(rng: np.random.Generator, median: float, sigma: float, size) -> np.ndarray:
    """LogNormal(median, sigma) = median * exp(sigma * Z); sigma 0 gives the median itself."""
    if sigma == 0.0:
        return np.full(size, float(median))
    x = rng.standard_normal(size)
    x *= sigma
    np.exp(x, out=x)
    x *= median
    return x


def bernoulli(rng: np.random.Generator, p: float, shape) -> np.ndarray:
    """Boolean Bernoulli(p) array. Rare events are placed by a binomial count and a
    uniform subset of positions, which has the same joint law as independent flags
    but costs one draw per event instead of one per element."""
    if p <= 0.0:
        return np.zeros(shape, dtype=bool)
    if p >= 1.0:
        return np.ones(shape, dtype=bool)
    size = int(np.prod(shape))
    if p < 0.05:
        k = int(rng.binomial(size, p))
        out = np.zeros(size, dtype=bool)
        if k:
            out[rng.choice(size, size=k, replace=False)] = True
        return out.reshape(shape)
    return rng.random(shape) < p


def draw_off(rng: np.random.Generator, p: Params, shape: tuple[int, int]) -> np.ndarray:
    """Time until each CPU next has interrupts enabled: a stall with prob. p_stall, else short."""
    stalled = bernoulli(rng, p.p_stall, shape)
    off = exponential(rng, p.irq_off_mean_us, shape)
    k = int(np.count_nonzero(stalled))
    if k:
        off[stalled] = lognormal(rng, p.stall_median_us, p.stall_sigma, k)
    return off


def draw_phase1(rng: np.random.Generator, p: Params, n_trials: int, nmi_arrays: bool = False) -> Draws:
    """Every draw the REBOOT-vector phase needs. `nmi` and `w2` are drawn lazily later:
    here they are NaN arrays to record them in (`nmi_arrays`) or empty.

    Arrays are laid out CPU-major in memory (returned as transposed views of shape
    (trials, CPUs)) so the per-trial max over CPUs is an elementwise max over rows.
    """
    shape = (p.n_remote, n_trials)
    ipi = exponential(rng, p.ipi_jitter_us, shape)
    ipi += p.ipi_base_us
    off = draw_off(rng, p, shape)
    dirty = bernoulli(rng, p.incoherent_fraction, shape)
    if dirty.any():
        w = lognormal(rng, p.wbinvd_median_us, p.wbinvd_sigma, shape)
    else:
        w = np.zeros(shape)
    dead = bernoulli(rng, p.p_unresponsive, shape)
    nan = np.full(shape if nmi_arrays else (0, 0), np.nan)
    return Draws(ipi=ipi.T, off=off.T, dirty=dirty.T, w=w.T, w2=nan.T, nmi=nan.copy().T, dead=dead.T,
                 hold=nan.copy().T)


def draw_hold_offs(rng: np.random.Generator, p: Params, count: int) -> np.ndarray:
    """NMI hold-offs D_i of `count` NMIs: with prob. p_nmi_delay LogNormal(nmi_delay_median_us,
    nmi_delay_sigma), else 0. Consumes nothing when p_nmi_delay = 0 (the model without them)."""
    hold = np.zeros(count)
    if p.p_nmi_delay > 0.0:
        held = bernoulli(rng, p.p_nmi_delay, count)
        k = int(np.count_nonzero(held))
        if k:
            hold[held] = lognormal(rng, p.nmi_delay_median_us, p.nmi_delay_sigma, k)
    return hold


def draw_nmi_path(rng: np.random.Generator, p: Params, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nmi latency with its hold-off, second WBINVD length, the hold-off) for `count` CPUs that
    get an NMI: all `nmi` base draws, then all `w2`, then the hold-offs (only if p_nmi_delay > 0,
    so the stream without hold-offs is the one before they existed)."""
    nmi = exponential(rng, p.nmi_jitter_us, count)
    nmi += p.nmi_base_us
    w2 = lognormal(rng, p.wbinvd_median_us, p.wbinvd_sigma, count)
    w2 *= p.rewbinvd_factor
    hold = draw_hold_offs(rng, p, count)
    if p.p_nmi_delay > 0.0:
        nmi += hold
    return nmi, w2, hold


def draw_rev2(rng: np.random.Generator, p: Params, n_trials: int) -> Rev2Draws:
    """The draws model revision 2 adds for `n_trials` trials, made after every revision-1 draw of
    them: CPU 0's flag `dirty0` (Bernoulli(incoherent_fraction)) and flush `w0` (LogNormal(wbinvd_us,
    wbinvd_sigma), only if some trial's CPU 0 is dirty), then, for the early flush as an IPI, every
    remote CPU's `ipi_pre` and `off_pre` (the laws of ipi_i and off_i, CPU-major like phase 1).
    Nothing is drawn (all None) for revision 1 or on the panic path (wait = 0), where they cannot
    matter, so those points consume the revision-1 stream exactly."""
    if not (p.cpu0_flush or p.flush_ipi):
        return Rev2Draws()
    dirty0 = bernoulli(rng, p.incoherent_fraction, n_trials)
    w0 = lognormal(rng, p.wbinvd_us, p.wbinvd_sigma, n_trials) if dirty0.any() else np.zeros(n_trials)
    if not p.flush_ipi:
        return Rev2Draws(dirty0, w0)
    shape = (p.n_remote, n_trials)
    ipi_pre = exponential(rng, p.ipi_jitter_us, shape)
    ipi_pre += p.ipi_base_us
    off_pre = draw_off(rng, p, shape)
    return Rev2Draws(dirty0, w0, ipi_pre.T, off_pre.T)


def new_generator(seed: np.random.SeedSequence) -> np.random.Generator:
    """The bit generator of every stream in the model (SFC64: the fastest NumPy offers)."""
    return np.random.Generator(np.random.SFC64(seed))


def draw_all(rng: np.random.Generator, p: Params, n_trials: int) -> Draws:
    """Every per-CPU draw of MODEL.md eagerly, including the NMI-path and revision-2 ones (for tests)."""
    d = draw_phase1(rng, p, n_trials)
    nmi, w2, hold = draw_nmi_path(rng, p, n_trials * p.n_remote)
    shape = (n_trials, p.n_remote)
    d = Draws(d.ipi, d.off, d.dirty, d.w, w2.reshape(shape), nmi.reshape(shape), d.dead, hold.reshape(shape))
    return d.with_rev2(draw_rev2(rng, p, n_trials))
