"""Adaptive precision (trials = "auto", issue 12) vs a fixed-trials sweep with trials = max_trials.

Two sweeps, each run twice on an embedded 2-CPU Ray through `sweeps.run` (real Parquet):
fixed (trials = max_trials) and adaptive (the same grid, the same shards, `[precision]`):

- naive: the grid of examples/tdx-kexec-small.toml, metric p_bad, target 1e-3;
- rare:  the grid of examples/tdx-kexec-rare.toml (cmc), metric p_race, rel_half_width 0.1.

Reported: CPU-trials (sum over stored rows of n_cpus x trials) and wall time of each run,
their ratios, and the decisions: the fixed sweep's decision per point is the same stop rule
(core.precision.decide) applied to all its max_trials trials; the adaptive one is
`outcomes.status`. "Same decision" counts points whose decided side agrees (below/above
target, precise); points the budget cannot decide are listed per kind. Because a shard's
rows depend only on (point, shard), the adaptive run's rows are a prefix of the fixed run's
(checked), so the comparison is on the very same trials.

Boundary search vs a full n_cpus grid: see `--part search` (when sweeps.search exists).
Reports only; never fails on time. Usage:
    python benchmarks/bench_adaptive.py [--part naive|rare|all] [--max-trials N] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pyarrow.compute as pc
from machine import machine

from sweep_helpers import race_spec  # noqa: E402  (tests/sweep_helpers.py)

ROOT = Path(__file__).resolve().parents[1]


def _with_trials(text: str, trials_line: str, shard_trials: int, extra: str = "") -> str:
    text = re.sub(r"(?m)^trials\s*=.*$", trials_line, text, count=1)
    text = re.sub(r"(?m)^shard_trials\s*=.*$", f"shard_trials = {shard_trials}", text, count=1)
    text = re.sub(r'(?m)^name\s*=\s*"([^"]*)"', lambda m: f'name = "{m[1]}-bench"', text, count=1)
    # the [precision] table goes before the first table header
    i = text.index("\n[")
    return text[:i] + "\n" + extra + text[i:]


def _rows(out: Path):
    from queries.resultset.reader import ResultSet

    return ResultSet.open(out).read_table("points")  # the committed rows only


def _cpu_trials(t) -> int:
    return int(pc.sum(pc.multiply(t["n_cpus"].cast("int64"), t["trials"])).as_py())


def compare(name: str, example: str, precision: str, max_trials: int, shard_trials: int, run_fixed: bool) -> dict:
    import queries
    from core.precision import DECIDED, EXHAUSTED, PointTally, ShardStats
    from sweeps import run
    from sweeps.spec import parse_spec

    base = (ROOT / "examples" / example).read_text()
    fixed_text = _with_trials(base, f"trials = {max_trials}", shard_trials)
    auto_text = _with_trials(base, 'trials = "auto"', shard_trials,
                             f"[precision]\n{precision}\nmax_trials = {max_trials}\n\n")
    spec = parse_spec(auto_text)
    rule = spec.precision
    res: dict = {"name": name, "points": spec.n_points, "rule": rule}
    from sweeps.grid import total_cpu_trials

    res["fixed_cpu_trials_planned"] = total_cpu_trials(parse_spec(fixed_text))
    with tempfile.TemporaryDirectory() as tmp:
        for kind, text in (("adaptive", auto_text), ("fixed", fixed_text)):
            if kind == "fixed" and not run_fixed:
                break
            t0 = time.perf_counter()
            rep = run(parse_spec(text), Path(tmp) / kind, progress=False)
            res[f"{kind}_wall"] = time.perf_counter() - t0
            assert rep.complete
            res[f"{kind}_rows"] = _rows(Path(tmp) / kind)
            res[f"{kind}_cpu_trials"] = _cpu_trials(res[f"{kind}_rows"])
        con = queries.connect(Path(tmp) / "adaptive")
        auto_status = dict(con.execute("SELECT point_id, status FROM outcomes").fetchall())
    res["auto_status"] = auto_status
    if not run_fixed:
        return res
    # the adaptive rows are a prefix of the fixed rows (same seeds and shard sizes)
    key = ["point_id", "shard"]
    fixed = res["fixed_rows"].drop_columns(["wall_s"]).sort_by([(k, "ascending") for k in key])
    auto = res["adaptive_rows"].drop_columns(["wall_s"]).sort_by([(k, "ascending") for k in key])
    fixed_by = {(r["point_id"], r["shard"]): r for r in fixed.to_pylist()}
    assert all(fixed_by[(r["point_id"], r["shard"])] == r for r in auto.to_pylist()), "adaptive rows differ from fixed"
    tallies: dict[str, PointTally] = {}
    for r in fixed.to_pylist():
        tallies.setdefault(r["point_id"], PointTally.for_params(r)).add(r["shard"], ShardStats.from_row(r))
    fixed_status = {pid: t.status(rule) for pid, t in tallies.items()}
    same = sum(1 for pid, s in fixed_status.items() if s == auto_status[pid] and s != EXHAUSTED)
    kinds: dict[tuple[str, str], int] = {}
    for pid, s in fixed_status.items():
        kinds[(s, auto_status[pid])] = kinds.get((s, auto_status[pid]), 0) + 1
    res.update(fixed_status=fixed_status, same=same, kinds=kinds)
    assert all(s in DECIDED for s in auto_status.values())
    return res


def report(r: dict) -> None:
    print(f"\n== {r['name']}: {r['points']} points, rule {r['rule'].model_dump()}")
    statuses: dict[str, int] = {}
    for s in r["auto_status"].values():
        statuses[s] = statuses.get(s, 0) + 1
    print(f"adaptive decisions: {dict(sorted(statuses.items()))}")
    if "fixed_wall" not in r:
        rate = r["adaptive_cpu_trials"] / r["adaptive_wall"]
        print(f"fixed     : {r['fixed_cpu_trials_planned']:.3e} CPU-trials (planned, not run); "
              f"~{r['fixed_cpu_trials_planned'] / rate:.0f} s wall extrapolated at the adaptive run's rate")
        print(f"adaptive  : {r['adaptive_cpu_trials']:.3e} CPU-trials, {r['adaptive_wall']:.1f} s wall")
        print(f"ratio     : {r['fixed_cpu_trials_planned'] / r['adaptive_cpu_trials']:.1f}x fewer CPU-trials")
        return
    assert r["fixed_cpu_trials"] == r["fixed_cpu_trials_planned"]
    ratio = r["fixed_cpu_trials"] / r["adaptive_cpu_trials"]
    print(f"fixed     : {r['fixed_cpu_trials']:.3e} CPU-trials, {r['fixed_wall']:.1f} s wall")
    print(f"adaptive  : {r['adaptive_cpu_trials']:.3e} CPU-trials, {r['adaptive_wall']:.1f} s wall")
    print(f"ratio     : {ratio:.1f}x fewer CPU-trials, {r['fixed_wall'] / r['adaptive_wall']:.1f}x less wall time")
    decided_fixed = sum(1 for s in r["fixed_status"].values() if s != "budget exhausted")
    print(f"decisions : {r['same']} of {decided_fixed} points the fixed sweep decides get the same decision")
    for (f, a), n in sorted(r["kinds"].items()):
        print(f"    fixed {f:>16} / adaptive {a:>16}: {n}")


def search_spec(max_trials: int, search: str | None, grid: str) -> str:
    """The adaptive sweep of the search comparison: with a [search] table, or as a grid over n_cpus."""
    return race_spec("bench-search", 3, "auto", 500, 0.1, precision=f'metric = "p_bad"\ntarget = 0.01\nmax_trials = {max_trials}',
                     search=search, axes=f"{grid}p_stall = [0.001, 0.01]\nwait = [0, 1]")


def grid_values(lo: int, hi: int) -> list[int]:
    """n_cpus at the search's resolution: steps of max(2, 10%) (a bracket of +-1 CPU or +-5%)."""
    out = [lo]
    while out[-1] < hi:
        out.append(min(hi, max(out[-1] + 2, round(out[-1] * 1.1))))
    return out


def search_vs_grid(lo: int, hi: int, max_trials: int) -> None:
    from sweeps import run
    from sweeps.grid import total_cpu_trials
    from sweeps.spec import parse_spec

    vals = grid_values(lo, hi)
    search_text = search_spec(max_trials, f"n_cpus = [{lo}, {hi}]", "")
    grid_text = search_spec(max_trials, None, f"n_cpus = {vals}\n")
    print(f"\n== boundary search vs n_cpus grid: n_cpus in [{lo}, {hi}], {len(vals)} grid values, p_bad < 0.01, "
          f"max_trials {max_trials}, 4 combinations")
    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        for kind, text in (("search", search_text), ("grid", grid_text)):
            t0 = time.perf_counter()
            rep = run(parse_spec(text), Path(tmp) / kind, progress=False)
            wall = time.perf_counter() - t0
            t = _rows(Path(tmp) / kind)
            out[kind] = (rep, wall, _cpu_trials(t))
            print(f"{kind:7}: {out[kind][2]:.3e} CPU-trials, {wall:.1f} s wall, {rep.n_tasks} tasks")
        import queries

        con = queries.connect(Path(tmp) / "grid")
        rows = con.execute("SELECT p_stall, wait, n_cpus, status FROM outcomes ORDER BY ALL").fetchall()
    grid_limit: dict = {}
    for ps, w, n, st in rows:
        g = grid_limit.setdefault((ps, w), [None, False])
        if st == "below target" and not g[1]:
            g[0] = n
        elif st != "below target":
            g[1] = True
    for r in out["search"][0].search:
        print(f"  p_stall={r['p_stall']} wait={r['wait']}: search {r['result']} ({r['probes']} probes, "
              f"monotone={r['monotone']}); grid: largest n_cpus below target before the first failure = "
              f"{grid_limit[(r['p_stall'], r['wait'])][0]}")
    fixed_grid = total_cpu_trials(parse_spec(_with_trials(grid_text.split("[precision]")[0] + grid_text.split(
        f"max_trials = {max_trials}\n", 1)[1], f"trials = {max_trials}", 500)))
    print(f"ratio  : {out['grid'][2] / out['search'][2]:.1f}x fewer CPU-trials than the same grid run adaptively, "
          f"{out['grid'][1] / out['search'][1]:.1f}x less wall time; {fixed_grid / out['search'][2]:.0f}x fewer than "
          f"the grid at fixed trials = max_trials ({fixed_grid:.3e} CPU-trials, planned)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["naive", "rare", "search", "all"], default="all")
    ap.add_argument("--no-fixed", action="store_true", help="naive part: do not run the fixed sweep (plan its cost)")
    ap.add_argument("--search-max-trials", type=int, default=16_000)
    ap.add_argument("--naive-max-trials", type=int, default=64_000)
    ap.add_argument("--rare-max-trials", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from cluster.connect import session

    print(machine())
    with session(num_cpus=args.workers):
        if args.part in ("naive", "all"):
            report(compare("naive: tdx-kexec-small grid", "tdx-kexec-small.toml", 'metric = "p_bad"\ntarget = 1e-3',
                           args.naive_max_trials, 1000, not args.no_fixed))
        if args.part in ("rare", "all"):
            report(compare("cmc: tdx-kexec-rare grid", "tdx-kexec-rare.toml", 'metric = "p_race"\nrel_half_width = 0.1',
                           args.rare_max_trials, 1000, True))
        if args.part in ("search", "all"):
            search_vs_grid(2, 2048, args.search_max_trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
