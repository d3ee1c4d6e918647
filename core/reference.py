"""The scalar reference model: MODEL.md "One trial", one trial at a time, line by line.

This is the oracle the vectorized core is checked against, and the engine of
`stoprace replay` (it records a per-CPU timeline). It is deliberately plain:
Python floats, explicit loops, no NumPy tricks. Keep it that way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .params import Params

INF = math.inf


@dataclass
class CpuTimeline:
    """What happened to one remote CPU in one trial (times in µs from the broadcast)."""

    cpu: int
    ipi: float
    off: float
    dirty: bool
    dead: bool
    enter: float  # e_i
    wbinvd_us: float  # w_i if dirty in the stop, else 0
    clear: float  # c_i (inf if dead)
    nmi_send: float | None = None  # s_i, if an NMI was sent
    nmi_arrive: float | None = None  # a_i (hold-off included)
    nmi_hold: float | None = None  # D_i, the hold-off inside a_i - s_i (0 if none), if an NMI was sent
    nmi_case: str | None = None  # "before-entry", "prologue", "during-wbinvd", "after-clear", "dead"
    handler_us: float | None = None  # h_i, if the NMI ran stop_this_cpu() again
    final_clear: float = 0.0  # f_i
    racer: bool = False
    races: bool = False
    flush_ipi: float | None = None  # revision 2's early flush: ipi'_i (None without that IPI)
    flush_off: float | None = None  # off'_i
    flush_done: float | None = None  # when CPU i finished the flush function (inf if dead)
    flush_flagged: bool | None = None  # whether it flushed there (its flag would be set)


@dataclass
class TrialResult:
    """One trial's outcome and summary, plus the per-CPU timeline."""

    outcome: str
    t_done_us: float | None
    nmi_sent: int
    racers: int
    overlap_us: float | None
    first_racer_cpu: int | None
    preflush_us: float | None
    phase: int = 1
    t1_us: float = 0.0
    t_nmi_us: float | None = None
    t_loop_us: float | None = None
    deadline_us: float | None = None
    cpus: list[CpuTimeline] = field(default_factory=list)
    handover_us: float = 0.0  # H: handoff_us, plus CPU 0's own WBINVD in revision 2's kexec path
    cpu0_dirty: bool | None = None  # revision 2, wait = 1: CPU 0's flag (before the early flush clears it)
    cpu0_wbinvd_us: float | None = None  # CPU 0's WBINVD: in the hand-over (none) or in the early flush
    hung_in_flush: int | None = None  # revision 2: the lowest dead CPU, which never took the flush IPI


def handover_us(p: Params, d: dict[str, Any]) -> float:
    """H, the hand-over after T_done: handoff_us, plus (model revision 2, kexec path, no early
    flush) CPU 0's own WBINVD in relocate_kernel() when its flag is set."""
    if p.model_rev == 2 and p.wait == 1 and p.mitigation == "none":
        return p.handoff_us + (d["w0"] if d["dirty0"] else 0.0)
    return p.handoff_us


def simulate_trial(p: Params, d: dict[str, Any]) -> TrialResult:
    """One trial from explicit per-CPU draws (lists indexed by CPU 1..n-1 at 0..n-2; `dirty0`
    and `w0`, CPU 0's, scalars)."""
    rev2 = p.model_rev == 2
    # Revision 2: panic() (wait = 0) runs no syscore shutdown, so no early flush there.
    early_flush = p.mitigation == "early_flush" and not (rev2 and p.wait == 0)
    T1 = p.timeout_us * p.udelay_factor
    H = handover_us(p, d)

    # Mitigation early_flush: WBINVD before the stop; no dirty CPU in the stop.
    preflush = None
    flush: list[tuple[float, float, float, bool]] = []  # revision 2: (ipi', off', done, flagged) per CPU
    cpu0_dirty = cpu0_w = None
    if early_flush and not rev2:  # revision 1: all in parallel at once, no IPI
        preflush = 0.0
        for i in range(p.n_cpus - 1):
            if d["dirty"][i]:
                preflush = max(preflush, d["w"][i])
    elif early_flush:  # revision 2: on_each_cpu(flush, wait=1) waits for every CPU to take the IPI
        cpu0_dirty = bool(d["dirty0"])
        cpu0_w = d["w0"] * (1 + p.wbinvd_contention * (p.n_cpus - 1)) if cpu0_dirty else None
        preflush = cpu0_w if cpu0_w is not None else 0.0  # CPU 0 runs the function too
        for i in range(p.n_cpus - 1):
            took = max(d["ipi_pre"][i], d["off_pre"][i])
            done = INF if d["dead"][i] else took + (d["w"][i] if d["dirty"][i] else 0.0)
            flush.append((d["ipi_pre"][i], d["off_pre"][i], done, bool(d["dirty"][i])))
            preflush = max(preflush, done)
    elif rev2 and p.wait == 1:
        cpu0_dirty = bool(d["dirty0"])
        cpu0_w = d["w0"] if cpu0_dirty else None

    # Phase 1, REBOOT vector.
    cpus: list[CpuTimeline] = []
    for i in range(p.n_cpus - 1):
        dirty = bool(d["dirty"][i]) and not early_flush
        dead = bool(d["dead"][i])
        e = max(d["ipi"][i], d["off"][i])
        w = d["w"][i] if dirty else 0.0
        c = INF if dead else e + p.prologue_us + w
        cpus.append(CpuTimeline(i + 1, d["ipi"][i], d["off"][i], dirty, dead, e, w, c, final_clear=c))
        if flush:
            cpus[-1].flush_ipi, cpus[-1].flush_off, cpus[-1].flush_done, cpus[-1].flush_flagged = flush[i]

    if preflush == INF:  # a dead CPU never took the flush IPI: the kexec hangs there, no stop
        dead_cpu = next(cpu.cpu for cpu in cpus if cpu.dead)
        return TrialResult("hang", None, 0, 0, None, None, None, 0, T1, cpus=cpus, handover_us=H,
                           cpu0_dirty=cpu0_dirty, cpu0_wbinvd_us=cpu0_w, hung_in_flush=dead_cpu)

    last_clear = max(cpu.clear for cpu in cpus)
    if last_clear <= T1:
        return TrialResult("clean", last_clear, 0, 0, None, None, preflush, 1, T1, cpus=cpus, handover_us=H,
                           cpu0_dirty=cpu0_dirty, cpu0_wbinvd_us=cpu0_w)

    # Phase 2, NMI: walk the live mask in ascending CPU id.
    T_nmi = T1 + p.console_us
    s = T_nmi
    nmi_sent = 0
    for i, cpu in enumerate(cpus):
        if cpu.clear <= s:
            continue  # already reported: no NMI, the clock does not advance
        cpu.nmi_send = s
        cpu.nmi_arrive = a = s + d["nmi"][i]  # nmi_i is the whole latency, hold-off D_i included
        cpu.nmi_hold = d["hold"][i] if "hold" in d else 0.0
        nmi_sent += 1
        s += p.nmi_send_us
        h = p.prologue_us + (d["w2"][i] if cpu.dirty else 0.0)
        if cpu.dead:
            cpu.nmi_case, cpu.final_clear = "dead", INF
        elif a < cpu.enter:
            cpu.nmi_case, cpu.final_clear = "before-entry", a + p.prologue_us + cpu.wbinvd_us
        elif a < cpu.enter + p.prologue_us:
            cpu.nmi_case, cpu.final_clear = "prologue", a + p.prologue_us + cpu.wbinvd_us
        elif a < cpu.clear:
            cpu.nmi_case, cpu.handler_us, cpu.final_clear = "during-wbinvd", h, cpu.clear + h
        else:
            cpu.nmi_case, cpu.handler_us, cpu.final_clear = "after-clear", h, cpu.clear
            cpu.racer = True
    T_loop = s
    F = max(cpu.final_clear for cpu in cpus)

    hang = timeout = False
    deadline = None
    if p.wait == 1:
        if F == INF:
            hang = True
            T_done = None
        else:
            T_done = max(T_loop, F)
    else:
        deadline = T_loop + p.nmi_wait_us * p.udelay_factor
        if F <= deadline:
            T_done = max(T_loop, F)
        else:
            T_done = deadline
            timeout = True

    # The race: a racer's NMI handler outlasts the hand-over H to the new kernel.
    racers = [cpu for cpu in cpus if cpu.racer]
    overlap = None
    first_racer = None
    if not hang:
        for cpu in racers:
            end = cpu.nmi_arrive + cpu.handler_us  # type: ignore[operator]
            overlap = end - T_done if overlap is None else max(overlap, end - T_done)  # type: ignore[operator]
            if end > T_done + H:  # type: ignore[operator]
                cpu.races = True
                if first_racer is None:
                    first_racer = cpu.cpu

    if hang:
        outcome = "hang"
    elif first_racer is not None:
        outcome = "race"
    elif timeout:
        outcome = "timeout"
    else:
        outcome = "nmi_clean"
    return TrialResult(
        outcome, T_done, nmi_sent, len(racers), overlap, first_racer, preflush, 2, T1, T_nmi, T_loop, deadline, cpus,
        H, cpu0_dirty, cpu0_w,
    )


def draw_trial(rng: np.random.Generator, p: Params) -> dict[str, Any]:
    """Every per-CPU draw of one trial, one scalar at a time, as in MODEL.md's table."""
    med = p.wbinvd_us * (1 + p.wbinvd_contention * (p.n_cpus - 1))
    d: dict[str, Any] = {k: [] for k in ("ipi", "off", "dirty", "w", "w2", "nmi", "dead", "hold")}
    for _ in range(p.n_cpus - 1):
        d["ipi"].append(p.ipi_base_us + rng.exponential(p.ipi_jitter_us))
        if rng.random() < p.p_stall:
            d["off"].append(p.stall_median_us * math.exp(p.stall_sigma * rng.standard_normal()))
        else:
            d["off"].append(rng.exponential(p.irq_off_mean_us))
        d["dirty"].append(rng.random() < p.incoherent_fraction)
        d["w"].append(med * math.exp(p.wbinvd_sigma * rng.standard_normal()))
        d["w2"].append(med * math.exp(p.wbinvd_sigma * rng.standard_normal()) * p.rewbinvd_factor)
        d["nmi"].append(p.nmi_base_us + rng.exponential(p.nmi_jitter_us))
        d["dead"].append(rng.random() < p.p_unresponsive)
        hold = 0.0
        if p.p_nmi_delay > 0 and rng.random() < p.p_nmi_delay:  # no draw without hold-offs
            hold = p.nmi_delay_median_us * math.exp(p.nmi_delay_sigma * rng.standard_normal())
        d["hold"].append(hold)
        d["nmi"][-1] += hold
    if p.model_rev == 2 and p.wait == 1:  # revision 2's draws, after the others (CPU 0, then the flush IPI)
        d["dirty0"] = rng.random() < p.incoherent_fraction
        d["w0"] = p.wbinvd_us * math.exp(p.wbinvd_sigma * rng.standard_normal())
        if p.mitigation == "early_flush":
            d["ipi_pre"], d["off_pre"] = [], []
            for _ in range(p.n_cpus - 1):
                d["ipi_pre"].append(p.ipi_base_us + rng.exponential(p.ipi_jitter_us))
                if rng.random() < p.p_stall:
                    d["off_pre"].append(p.stall_median_us * math.exp(p.stall_sigma * rng.standard_normal()))
                else:
                    d["off_pre"].append(rng.exponential(p.irq_off_mean_us))
    return d


def simulate(p: Params, n_trials: int, seed: int) -> list[TrialResult]:
    """n_trials independent trials with the reference's own scalar random stream."""
    rng = np.random.default_rng(seed)
    return [simulate_trial(p, draw_trial(rng, p)) for _ in range(n_trials)]
