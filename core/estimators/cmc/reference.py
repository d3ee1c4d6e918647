"""The scalar reference of the cmc estimator: one trial, by integrating the reference model over off_i.

Independent of core.estimators.cmc.walk's closed forms: it re-runs core.reference.simulate_trial with
CPU i's irqs-off time replaced at the points where the outcome can change and sums
the probability mass of the irqs-off law between them. Slow; used by the tests.
"""

from __future__ import annotations

import math

from core import reference
from core.params import Params

INF = math.inf


def _timed_out(p: Params, r: reference.TrialResult) -> bool:
    if p.wait != 0 or r.phase != 2 or r.deadline_us is None:
        return False
    return max(cpu.final_clear for cpu in r.cpus) > r.deadline_us


def _ref_phi_diff(z1: float, z2: float) -> float:
    """Phi(z2) - Phi(z1) in plain Python: Simpson on the density for narrow windows,
    tail differences of math.erfc otherwise (independent of ndtr_diff)."""
    if z2 <= z1:
        return 0.0
    if math.isfinite(z1) and math.isfinite(z2) and (z2 - z1) * (1.0 + max(abs(z1), abs(z2))) < 0.05:
        k = 64
        hh = (z2 - z1) / k
        acc = 0.0
        for j in range(k + 1):
            wgt = 1 if j in (0, k) else (4 if j % 2 else 2)
            z = z1 + j * hh
            acc += wgt * math.exp(-0.5 * z * z)
        return acc * hh / 3.0 / math.sqrt(2.0 * math.pi)

    def q(z):
        return 0.5 * math.erfc(z / math.sqrt(2.0))

    if z1 >= 0:
        return q(z1) - q(z2)
    if z2 <= 0:
        return q(-z2) - q(-z1)
    return 1.0 - q(-z1) - q(z2)


def _ref_cont_mass(p: Params, x1: float, x2: float) -> float:
    """Atom-free part of P(off in (x1, x2)), 0 <= x1 < x2, in plain Python."""
    out = 0.0
    if p.p_stall > 0 and p.stall_sigma > 0 and p.stall_median_us > 0:
        z1 = -INF if x1 <= 0 else math.log(x1 / p.stall_median_us) / p.stall_sigma
        z2 = math.log(x2 / p.stall_median_us) / p.stall_sigma
        if math.isfinite(z1):
            z2 = z1 + math.log1p((x2 - x1) / x1) / p.stall_sigma
        out += p.p_stall * _ref_phi_diff(z1, z2)
    if p.p_stall < 1 and p.irq_off_mean_us > 0:
        mu = p.irq_off_mean_us
        out += (1 - p.p_stall) * math.exp(-x1 / mu) * -math.expm1(-(x2 - x1) / mu)
    return out


def _ref_cdf(p: Params, x: float) -> float:
    out = 0.0
    if p.p_stall > 0:
        if p.stall_sigma > 0 and p.stall_median_us > 0:
            if x > 0:
                z = math.log(x / p.stall_median_us) / p.stall_sigma
                out += p.p_stall * 0.5 * math.erfc(-z / math.sqrt(2.0))
        else:
            out += p.p_stall * (x >= (p.stall_median_us if p.stall_sigma == 0 else 0.0))
    if p.p_stall < 1:
        out += (1 - p.p_stall) * (-math.expm1(-x / p.irq_off_mean_us) if p.irq_off_mean_us > 0 else 1.0)
    return out


def _integrate_off(p: Params, d: dict[str, list], i: int) -> list[float]:
    """[race_sum, race, bad] parts of CPU i: its indicators integrated over the law of off_i
    (every other draw, its own NMI latency included, as given in `d`)."""
    m = p.n_cpus - 1
    early = p.mitigation == "early_flush" and not (p.model_rev == 2 and p.wait == 0)
    base = reference.simulate_trial(p, d)
    t_nmi, step, ho = p.t_nmi_us, p.nmi_send_us, reference.handover_us(p, d)
    clocks = [t_nmi]
    for _ in range(m + 1):
        clocks.append(clocks[-1] + step)
    wt = p.nmi_wait_us * p.udelay_factor
    dirty = bool(d["dirty"][i]) and not early
    k_i = p.prologue_us + (d["w"][i] if dirty else 0.0)
    ipi = d["ipi"][i]
    h_i = p.prologue_us + (d["w2"][i] if dirty else 0.0)
    off = list(d["off"])
    dd = dict(d)
    dd["off"] = off

    def ind(x: float) -> tuple[bool, bool, bool]:
        off[i] = x
        r = reference.simulate_trial(p, dd)
        first = r.outcome == "race" and r.first_racer_cpu == i + 1
        return r.cpus[i].races, first, first and not _timed_out(p, r)

    # c-space candidates; i can only race with c_i in (T_nmi, clocks[m-1] + nmi_i].
    cands = {p.t1_us, t_nmi}
    for s_ in clocks:
        a_ = s_ + d["nmi"][i]
        cands.update({s_, a_, a_ + h_i - ho, s_ + wt, s_ + wt + ho})
        for j in range(m):
            if j == i:
                continue
            dj = bool(d["dirty"][j]) and not early
            hj = p.prologue_us + (d["w2"][j] if dj else 0.0)
            aj = s_ + d["nmi"][j]
            cands.update({aj + hj - ho, aj + p.prologue_us + (d["w"][j] if dj else 0.0), aj})
    for cpu in base.cpus:
        cands.update({cpu.clear, cpu.final_clear, cpu.clear + (cpu.handler_us or 0.0)})
        if cpu.nmi_arrive is not None and cpu.handler_us is not None:
            cands.add(cpu.nmi_arrive + cpu.handler_us - ho)
    c_lo, c_hi = t_nmi, clocks[m - 1] + d["nmi"][i]
    lo_x = max(ipi, c_lo - k_i - 1.0)
    hi_x = c_hi - k_i + 1.0
    cuts = {lo_x, hi_x}
    cuts.update(x - k_i for x in cands if math.isfinite(x) and lo_x < x - k_i < hi_x)
    cuts.update(lo_x + (hi_x - lo_x) * j / 32 for j in range(1, 32))
    xs = sorted(x for x in cuts if lo_x <= x <= hi_x)

    tot = [0.0, 0.0, 0.0]  # race_sum, race, bad

    def piece(x1: float, x2: float, depth: int = 0) -> None:
        if not x2 > x1:
            return
        u, v = x1 + (x2 - x1) / 3.0, x1 + 2.0 * (x2 - x1) / 3.0
        iu, iv = ind(u), ind(v)
        if depth > 40:
            raise RuntimeError(f"cmc_trial_reference: too many breakpoints near off = {x1!r}")
        if iu == iv or not (x1 < u < v < x2):
            if any(iu):
                w_ = _ref_cont_mass(p, x1, x2)
                tot[0] += w_ * iu[0]
                tot[1] += w_ * iu[1]
                tot[2] += w_ * iu[2]
            return
        a_, b_ = u, v  # bisect to an adjacent float pair
        for _ in range(200):
            mid = 0.5 * (a_ + b_)
            if mid <= a_ or mid >= b_:
                break
            if ind(mid) == iu:
                a_ = mid
            else:
                b_ = mid
        piece(x1, a_, depth + 1)
        piece(a_, x2, depth + 1)

    for x1, x2 in zip(xs[:-1], xs[1:]):
        piece(x1, x2)
    # atoms: off_i <= ipi_i (e_i = ipi_i), and a degenerate stall law above ipi_i
    ia = ind(ipi)
    wa = _ref_cdf(p, ipi)
    tot = [tot[0] + wa * ia[0], tot[1] + wa * ia[1], tot[2] + wa * ia[2]]
    if p.p_stall > 0 and not (p.stall_sigma > 0 and p.stall_median_us > 0):
        sv = p.stall_median_us if p.stall_sigma == 0 else 0.0
        if sv > ipi:
            ia = ind(sv)
            tot = [tot[0] + p.p_stall * ia[0], tot[1] + p.p_stall * ia[1], tot[2] + p.p_stall * ia[2]]
    return tot


def _with(d: dict[str, list], i: int, **values: float) -> dict[str, list]:
    """A copy of the draws with CPU i's given draws replaced."""
    out = dict(d)
    for name, v in values.items():
        col = list(d[name])
        col[i] = v
        out[name] = col
    return out


def ref_nu_threshold(p: Params, d: dict[str, list], i: int, k_i: float, h_i: float) -> float:
    """The least NMI latency with which CPU i could race, found by running the reference
    model: s_i is its send time when it is sent an NMI (it clears last of all), and
    min T_done over its races is T_done when it clears just after s_i and the NMI comes
    much later (T_done then no longer depends on c_i). inf when that trial hangs."""
    far = 1e15
    s_i = reference.simulate_trial(p, _with(d, i, off=far, nmi=far)).cpus[i].nmi_send
    assert s_i is not None
    r = reference.simulate_trial(p, _with(d, i, ipi=0.0, off=max(s_i - k_i + 1e-4, 0.0), nmi=far))
    if r.t_done_us is None:
        return INF
    return r.t_done_us - s_i + reference.handover_us(p, d) - h_i


def _ref_strata(p: Params, nu0: float, nmi: float, hold: float, holdoff: float | None) -> list[tuple[float, float]]:
    """(weight, NMI latency) pairs for a CPU whose latency is integrated out: without a
    hold-off P(X > x0) at nu0 + X' (memorylessness), with one the same at x0 - D."""
    base, jit, pd = p.nmi_base_us, p.nmi_jitter_us, p.p_nmi_delay
    x = nmi - base  # the sampled Exponential(jitter) part
    if pd > 0:
        x = max(x - hold, 0.0)
    out = []
    for prob, dd in ((1.0 - pd, 0.0), (pd, holdoff)):
        if prob <= 0:
            continue
        assert dd is not None, "p_nmi_delay > 0 needs the hold-off draws"
        start = base + dd
        if jit == 0:
            out.append((prob, start))
        elif nu0 - start > 0:
            out.append((prob * math.exp(-(nu0 - start) / jit), nu0 + x))
        else:
            out.append((prob, nmi if pd == 0 else start + x))
    return out


def cmc_trial_reference(p: Params, d: dict[str, list], detail: bool = False, holdoff: list[float] | None = None):
    """The cmc values (race, bad) of ONE trial, computed independently of `_cmc_values`.

    For every CPU i the scalar reference model `core.reference.simulate_trial` is run with
    off_i replaced by trial values, and the indicators "i is the first racing CPU",
    "... and no hang/timeout" and "i meets the race condition" are integrated over the
    law of off_i: the off axis is cut at generous candidate breakpoints (every send-clock
    value, NMI arrival, handler end, deadline and other CPUs' clear times the trial can
    produce) plus a uniform grid, each piece is probed at two interior points, and
    pieces whose probes disagree are bisected to floating-point resolution. Atoms
    (off_i <= ipi_i gives e_i = ipi_i; a degenerate stall law) are evaluated directly.
    A CPU whose NMI-path handler is shorter than the hand-over H (`reference.handover_us`: handoff_us,
    plus CPU 0's flush in revision 2) races only with a late NMI:
    its latency is integrated out too (core/README.md, "Late NMIs"), with its threshold
    found by running the reference model (`ref_nu_threshold`) and `holdoff` the fresh
    hold-off draw per CPU (needed when p_nmi_delay > 0).
    `d` holds per-CPU lists like `Draws.to_lists()`. With detail=True returns
    (race, bad, race_sum). Slow (plain Python): for tests on a few CPUs.
    """
    m = p.n_cpus - 1
    early = p.mitigation == "early_flush" and not (p.model_rev == 2 and p.wait == 0)
    base = reference.simulate_trial(p, d)
    bad = 1.0 if (base.outcome == "hang" or _timed_out(p, base)) else 0.0
    if base.hung_in_flush is not None:  # revision 2: hung in the early flush, whatever off_i is
        return (0.0, bad, 0.0) if detail else (0.0, bad)
    ho = reference.handover_us(p, d)
    race = race_sum = 0.0
    random_nmi = p.nmi_jitter_us > 0 or p.p_nmi_delay > 0

    def handler(j: int) -> float:
        return p.prologue_us + (d["w2"][j] if bool(d["dirty"][j]) and not early else 0.0)

    # revision 2 integrates a late CPU's NMI latency only in trials where no CPU has h_j >= H
    direct = p.model_rev == 2 and any(not d["dead"][j] and handler(j) >= ho for j in range(m))
    for i in range(m):
        if d["dead"][i]:
            continue
        dirty = bool(d["dirty"][i]) and not early
        k_i = p.prologue_us + (d["w"][i] if dirty else 0.0)
        h_i = p.prologue_us + (d["w2"][i] if dirty else 0.0)
        if random_nmi and h_i < ho and not direct:
            nu0 = ref_nu_threshold(p, d, i, k_i, h_i)
            tot = [0.0, 0.0, 0.0]
            if math.isfinite(nu0):
                hold = d["hold"][i] if "hold" in d else 0.0
                for wgt, nu in _ref_strata(p, nu0, d["nmi"][i], hold, None if holdoff is None else holdoff[i]):
                    if wgt > 0:
                        part = _integrate_off(p, _with(d, i, nmi=nu), i)
                        tot = [t + wgt * q for t, q in zip(tot, part)]
        else:
            tot = _integrate_off(p, d, i)
        race_sum += tot[0]
        race += tot[1]
        bad += tot[2]
    if detail:
        return race, bad, race_sum
    return race, bad
