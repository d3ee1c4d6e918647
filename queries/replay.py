"""Replay one trial of a results dir from its address (point, shard, trial).

The stored row gives the point's parameters and seed; the shard's seed follows
(MODEL.md), and the vectorized core recomputes only the chunk holding the trial.
The recorded draws are then run through the scalar reference model, which gives
the per-CPU timeline and cross-checks the vectorized result.

A trial of the late estimator has explicit draws only for its late CPUs (those that missed
the 1 s wait); the others are known by their number and the maximum of their clear times
(T_max). The reference runs with stand-ins for them (clearing at the bottom of the law, one
exactly at T_max), and the timeline shows the late CPUs and one line for the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.draws import Draws
from core.estimators import get_estimator
from core.estimators.late.estimator import LateTrial
from core.outcomes import OUTCOMES
from core.params import PARAM_NAMES, Params, make_params, with_neutral
from core.reference import TrialResult, simulate_trial
from core.vectorized import shard_seed
from queries.db import QueryError, first_line, open_result_set
from queries.resultset.reader import ResultSet


@dataclass
class Replay:
    """One trial: its address, parameters, draws, the reference timeline and the vectorized outcome."""

    point_id: str
    shard: int
    trial: int
    params: Params
    point_seed: int
    draws: Draws
    result: TrialResult
    vectorized_outcome: str
    late: LateTrial | None = None
    """Late estimator: what it drew (the late CPUs, the others' count and T_max); the timeline's
    other CPUs are stand-ins."""

    def to_json(self) -> dict[str, Any]:
        r = asdict(self.result)
        if self.late is not None:  # only the late CPUs were drawn: the others are not a timeline
            r["cpus"] = [c for c in r["cpus"] if c["cpu"] in set(self.late.cpu)]
        return {
            "point_id": self.point_id,
            "shard": self.shard,
            "trial": self.trial,
            "point_seed": self.point_seed,
            "params": self.params.model_dump(),
            "vectorized_outcome": self.vectorized_outcome,
            **r,
            **({"late": asdict(self.late)} if self.late is not None else {}),
        }


def _plain(v: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, non-finite floats (a dead CPU's clear = inf) as null."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def replay_json(r: Replay) -> dict[str, Any]:
    """The replay as strict JSON data (`stoprace replay --json` and the HTTP API print exactly this)."""
    return _plain(r.to_json())


def load_shard_row(result_dir: str | Path | ResultSet, point_id: str, shard: int) -> dict[str, Any]:
    """The stored `points` row of (point, shard); QueryError (one line) if absent."""
    rs = result_dir if isinstance(result_dir, ResultSet) else open_result_set(result_dir)
    try:
        dset = rs.dataset("points")  # the committed files, columns unified across versions
        assert dset is not None  # open_result_set refuses a set without points files
        cols = [c for c in (*PARAM_NAMES, "seed", "trials", "shard", "point_id", "estimator") if c in dset.schema.names]
        t = dset.to_table(columns=cols, filter=pc.field("point_id") == point_id)
    except (pa.ArrowException, OSError) as e:  # a file that became unreadable after the check
        raise QueryError(f"cannot read points files of {rs.display}: {first_line(e)}") from None
    if t.num_rows == 0:
        raise QueryError(f"point '{point_id}' is not in {rs.display} (list ids: stoprace query {rs.display} --sql \"select point_id from outcomes\")")
    rows = t.filter(pc.equal(t["shard"], shard)).to_pylist()
    if not rows:
        shards = sorted(set(t["shard"].to_pylist()))
        raise QueryError(f"--shard {shard} is not stored for point {point_id} (stored: {shards[0]}..{shards[-1]})")
    return with_neutral(rows[0])  # a file written before a parameter existed lacks its column


def replay(result_dir: str | Path | ResultSet, point_id: str, shard: int, trial: int) -> Replay:
    """Rebuild trial `trial` of shard `shard` of point `point_id` exactly."""
    row = load_shard_row(result_dir, point_id, shard)
    where = result_dir.display if isinstance(result_dir, ResultSet) else str(result_dir)
    params = make_params({n: row[n] for n in PARAM_NAMES}, where=where)
    if not 0 <= trial < row["trials"]:
        raise QueryError(f"--trial {trial} is outside shard {shard}'s trials 0..{row['trials'] - 1}")
    seed = shard_seed(row["seed"], shard)
    try:  # each estimator has its own stream layout (cmc draws the NMI path eagerly)
        est = get_estimator(row.get("estimator"))
    except KeyError as e:
        raise QueryError(f"{where}: point {point_id} shard {shard}: {e.args[0]}") from None
    r = est.replay(params, row["trials"], seed, trial)
    result = simulate_trial(params, r.draws.to_lists())
    late = r.values if isinstance(r.values, LateTrial) else None
    return Replay(point_id, shard, trial, params, row["seed"], r.draws, result, OUTCOMES[r.batch.outcome[0]], late)


def _cpu0_line(r: Replay) -> str:
    """CPU 0's flag and flush (revision 2, kexec path), or '' where the model has none."""
    res = r.result
    if res.hung_in_flush is not None:
        return (f"HUNG in the early flush: CPU {res.hung_in_flush} never took its IPI (on_each_cpu waits forever); "
                "no stop ran\n")
    if res.cpu0_dirty is None:
        return ""
    if not res.cpu0_dirty:
        return "CPU 0: flag clear, no WBINVD of its own\n"
    where = "in the early flush, alongside the others" if r.params.mitigation == "early_flush" else \
        "in relocate_kernel(), after T_done and before the new image overwrites memory"
    return f"CPU 0: flag set, WBINVD {_t(res.cpu0_wbinvd_us)} µs {where}\n"


def _t(x: float | None) -> str:
    if x is None:
        return "-"
    if x == float("inf"):
        return "never"
    return f"{x:,.2f}"


def format_timeline(r: Replay, all_cpus: bool = False, limit: int = 40) -> str:
    """A terminal timeline, CPU by CPU (µs since the REBOOT broadcast).

    Without `all_cpus`, CPUs that got an NMI plus the last few to clear are shown. `hold-off`
    is the NMI hold-off D_i inside `nmi arrive - nmi sent` ("-" when the NMI was not held off).
    Model revision 2: the hand-over line shows H with CPU 0's own WBINVD; under early_flush on the
    kexec path a line per CPU of the early flush's IPI (ipi', irqs-off', when it finished), and the
    CPU that never took it when the kexec hung there.
    """
    res = r.result
    cpus = res.cpus
    # the early flush's per-CPU IPIs: the late estimator draws only their maximum (preflush_us)
    flush = r.late is None and any(c.flush_done is not None for c in cpus)
    if r.late is not None:  # late estimator: the late CPUs are the trial's only individual draws
        late_ids = set(r.late.cpu)
        cpus = [c for c in cpus if c.cpu in late_ids]
    if not all_cpus and len(cpus) > limit:
        nmi = [c for c in cpus if c.nmi_send is not None]
        latest = sorted(cpus, key=lambda c: c.clear, reverse=True)[: max(5, limit - len(nmi))]
        slowest = sorted(cpus, key=lambda c: c.flush_done or 0.0, reverse=True)[:3] if flush else []
        keep = {c.cpu for c in nmi} | {c.cpu for c in latest} | {c.cpu for c in slowest}
        shown = [c for c in cpus if c.cpu in keep]
    else:
        shown = cpus
    head = (
        f"point {r.point_id}  shard {r.shard}  trial {r.trial}  (seed {r.point_seed})\n"
        f"outcome: {res.outcome}   T_done: {_t(res.t_done_us)} µs   NMIs sent: {res.nmi_sent}   "
        f"racers: {res.racers}   overlap: {_t(res.overlap_us)} µs   first racer: {res.first_racer_cpu or '-'}\n"
        f"T1 (end of REBOOT wait): {_t(res.t1_us)}   T_nmi: {_t(res.t_nmi_us)}   T_loop: {_t(res.t_loop_us)}"
        + (f"   deadline: {_t(res.deadline_us)}" if res.deadline_us is not None else "")
        + (f"   preflush: {_t(res.preflush_us)}" if res.preflush_us is not None else "")
        + f"   hand-over H: {_t(res.handover_us)} (handoff {r.params.handoff_us:,.2f}"
        + (f" + CPU 0's WBINVD {_t(res.cpu0_wbinvd_us)})" if res.handover_us != r.params.handoff_us else ")")
        + f"   model_rev {r.params.model_rev}\n"
        + _cpu0_line(r)
    )
    cols = f"{'cpu':>5} {'ipi':>10} {'irqs-off':>13} {'enter':>13} {'wbinvd':>10} {'clear':>13} {'nmi sent':>13} {'hold-off':>10} {'nmi arrive':>13} {'case':>13} {'handler end':>13} {'final':>13}  mark"
    lines = [head, cols]
    for c in shown:
        end = c.nmi_arrive + c.handler_us if c.handler_us is not None and c.nmi_arrive is not None else None
        mark = "RACE" if c.races else "racer" if c.racer else "dead" if c.dead else ""
        lines.append(
            f"{c.cpu:>5} {_t(c.ipi):>10} {_t(c.off):>13} {_t(c.enter):>13} {_t(c.wbinvd_us if c.dirty else None):>10} "
            f"{_t(c.clear):>13} {_t(c.nmi_send):>13} {_t(c.nmi_hold or None):>10} {_t(c.nmi_arrive):>13} {c.nmi_case or '':>13} {_t(end):>13} "
            f"{_t(c.final_clear):>13}  {mark}"
        )
    if flush:
        lines += ["", "early flush (on_each_cpu IPI before the stop; a CPU flushes once it takes it):",
                  f"{'cpu':>5} {'ipi':>10} {'irqs-off':>13} {'flagged':>8} {'done':>13}"]
        lines += [f"{c.cpu:>5} {_t(c.flush_ipi):>10} {_t(c.flush_off):>13} {'yes' if c.flush_flagged else 'no':>8} "
                  f"{_t(c.flush_done):>13}" + ("  (never took it)" if c.dead else "") for c in shown]
    if len(shown) < len(cpus):
        lines.append(f"({len(cpus) - len(shown)} CPUs that cleared early without an NMI not shown; --all shows them)")
    if r.late is not None and r.late.others:
        parts = ", ".join(f"{n} {k}" for k, n in r.late.counts.items() if n)
        lines.append(f"({r.late.others} other CPUs cleared by T_max = {_t(r.late.t_max_us)} µs, the maximum of their "
                     f"clear times, drawn as one value ({parts}); the late estimator draws only the {r.late.late_cpus} "
                     f"CPU{'s' if r.late.late_cpus != 1 else ''} that missed the 1 s wait individually)")
    if r.vectorized_outcome != res.outcome:
        lines.append(f"WARNING: vectorized core says {r.vectorized_outcome}, reference says {res.outcome}")
    return "\n".join(lines)
