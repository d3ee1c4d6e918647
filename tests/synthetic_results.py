"""Small, valid stoprace result directories with known counts, for tests and benchmarks.

The files follow sweeps.schema exactly (POINTS_SCHEMA / EVENTS_SCHEMA) and the
layout of SCHEMA.md (spec.toml, manifest.json, points/task-NNNNNN.parquet,
events/task-NNNNNN.parquet only for tasks with race/hang/timeout trials), but
the numbers are not simulated: each point's outcome counts per shard are given
by the caller, and stop times are drawn cheaply per histogram bin so that
`t_done_hist`, `t_done_sum_us` and `t_done_max_us` are mutually consistent.

    pts = grid({"n_cpus": [8, 64], "wbinvd_us": [100.0, 1e4]},
               lambda p: [{"clean": 990, "race": 10}] * 2)
    write_results(tmp_path / "r", pts, sweep="demo")
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.histogram import BINS_PER_DECADE, N_BINS
from core.outcomes import EVENT_OUTCOMES, OUTCOMES
from core.params import DEFAULTS, PARAM_NAMES, SPECS
from sweeps.grid import canonical_point_json, point_id_of
from sweeps.schema import EVENTS_SCHEMA, PARAM_TYPES, POINTS_SCHEMA

_ESTIMATOR_NAMES = ("estimator", "p_race_est", "p_race_var", "p_bad_est", "p_bad_var")
ESTIMATOR_FIELDS = [POINTS_SCHEMA.field(n) for n in _ESTIMATOR_NAMES]
"""The rare-event estimator columns of `points`; written into only some files to test union_by_name."""
BASE_POINTS_SCHEMA = pa.schema([f for f in POINTS_SCHEMA if f.name not in _ESTIMATOR_NAMES])


@dataclass
class Point:
    """One sweep point: parameter overrides of DEFAULTS and its outcome counts per shard."""

    params: dict[str, Any]
    shards: list[dict[str, int]] = field(default_factory=lambda: [{"clean": 1000}])
    hists: list[Sequence[int]] | None = None
    """Optional explicit stop-time histogram per shard (128 bins summing to trials - hang)."""
    t_max: list[float] | None = None
    """Optional largest stop time per shard (with `hists`; default: the middle of the top non-empty bin)."""
    cmc: list[tuple[float, float, float, float]] | None = None
    """Optional cmc estimates per shard: (p_race_est, p_race_var, p_bad_est, p_bad_var); the point is then
    written with estimator = 'cmc' (every task file gets the estimator columns)."""

    def full_params(self) -> dict[str, Any]:
        p = dict(DEFAULTS)
        p.update(self.params)
        return {name: SPECS[name].canon(p[name]) for name in PARAM_NAMES}

    def point_id(self) -> str:
        return point_id_of(canonical_point_json(self.full_params()))


def grid(
    axes: Mapping[str, Sequence[Any]],
    counts: Callable[[dict[str, Any]], Mapping[str, int] | Sequence[Mapping[str, int]]],
    base: Mapping[str, Any] | None = None,
) -> list[Point]:
    """Every combination of `axes` (over `base`); `counts(params)` gives one shard's counts or a list per shard."""
    names = list(axes)
    out = []
    for combo in itertools.product(*(axes[n] for n in names)):
        params = dict(base or {})
        params.update(zip(names, combo))
        c = counts(dict(params))
        shards = [dict(c)] if isinstance(c, Mapping) else [dict(s) for s in c]
        out.append(Point(params, shards))
    return out


# --------------------------------------------------------------------------- stop times


def _bin_of(t_us: float) -> int:
    return int(min(max(math.floor(BINS_PER_DECADE * math.log10(max(t_us, 1.0))), 0), N_BINS - 1))


def _spread(rng: np.random.Generator, n: int, centre_us: float, width_bins: float = 2.0) -> np.ndarray:
    """n stop times as counts over bins, around centre_us (a discretized normal in bin index)."""
    if n <= 0:
        return np.zeros(N_BINS, np.int64)
    b = np.arange(N_BINS)
    w = np.exp(-0.5 * ((b - _bin_of(centre_us)) / width_bins) ** 2)
    return rng.multinomial(n, w / w.sum()).astype(np.int64)


_MID = 10.0 ** ((np.arange(N_BINS) + 0.5) / BINS_PER_DECADE)


def _shard_times(rng: np.random.Generator, p: Mapping[str, Any], c: Mapping[str, int]) -> tuple[np.ndarray, float, float]:
    """(hist, sum_us, max_us) of the finite stop times of one shard; hangs have none."""
    clean_t = p["wbinvd_us"] * (1 + p["wbinvd_contention"] * (p["n_cpus"] - 1)) + p["prologue_us"] + 50.0
    nmi_t = p["timeout_us"] * p["udelay_factor"] + p["console_us"] + 2 * p["wbinvd_us"]
    h = _spread(rng, c.get("clean", 0), clean_t)
    h += _spread(rng, c.get("nmi_clean", 0) + c.get("race", 0), nmi_t, 1.0)
    h += _spread(rng, c.get("timeout", 0), nmi_t + p["nmi_wait_us"] * p["udelay_factor"], 0.5)
    nz = np.flatnonzero(h)
    if nz.size == 0:
        return h, 0.0, float("nan")
    return h, float((h * _MID).sum()), float(_MID[nz[-1]])


# --------------------------------------------------------------------------- writing


def _check_counts(c: Mapping[str, int]) -> dict[str, int]:
    bad = set(c) - set(OUTCOMES)
    if bad:
        raise ValueError(f"unknown outcome(s) {sorted(bad)}")
    return {o: int(c.get(o, 0)) for o in OUTCOMES}


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def write_results(
    path: str | Path,
    points: Iterable[Point],
    *,
    sweep: str = "synth",
    seed: int = 20250616,
    n_tasks: int | None = None,
    events: bool = True,
    estimator_every: int = 0,
    extra_points_columns: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
) -> Path:
    """Write a result directory; returns its path.

    Rows (point, shard) are dealt into `n_tasks` task files (default: one task per
    point). `events=False` writes no events files at all. `estimator_every=k > 0`
    adds the ESTIMATOR_FIELDS columns to every k-th task file (mixed schemas, as
    a store written by two versions would be). `extra_points_columns` maps a
    float64 column name to a function of the row dict (added to every file).
    """
    path = Path(path)
    pts = list(points)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    ev_rows: list[dict[str, Any]] = []
    for pt in pts:
        p = pt.full_params()
        pid = pt.point_id()
        pseed = int(hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest()[:16], 16)
        for k, raw in enumerate(pt.shards):
            c = _check_counts(raw)
            if pt.hists is not None:
                h = np.asarray(pt.hists[k], dtype=np.int64)
                if h.shape != (N_BINS,) or h.sum() != sum(c.values()) - c["hang"] or (h < 0).any():
                    raise ValueError(f"hist of shard {k} must have {N_BINS} bins summing to trials - hang")
                nz = np.flatnonzero(h)
                s = float((h * _MID).sum())
                mx = float(_MID[nz[-1]]) if nz.size else float("nan")
                if pt.t_max is not None:
                    mx = float(pt.t_max[k])
            else:
                h, s, mx = _shard_times(rng, p, c)
            row = {"sweep": sweep, "point_id": pid, "shard": k, **p, "trials": sum(c.values()), **c,
                   "t_done_sum_us": s, "t_done_max_us": mx, "t_done_hist": h.tolist(),
                   "seed": pseed, "wall_s": 0.01}
            if pt.cmc is not None:
                re_, rv, be, bv = pt.cmc[k]
                row.update(estimator="cmc", p_race_est=float(re_), p_race_var=float(rv),
                           p_bad_est=float(be), p_bad_var=float(bv))
            rows.append(row)
            if events:
                ev_rows.append(_events_for(rng, sweep, pid, k, p, c))
    if n_tasks is None:
        n_tasks = max(len(pts), 1)
    n_tasks = max(1, min(n_tasks, max(len(rows), 1)))

    (path / "points").mkdir(parents=True, exist_ok=True)
    (path / "events").mkdir(parents=True, exist_ok=True)
    (path / "spec.toml").write_text(_spec_toml(sweep, seed, pts))
    tasks = np.array_split(np.arange(len(rows)), n_tasks)
    any_cmc = any(pt.cmc is not None for pt in pts)
    for t, idx in enumerate(tasks):
        schema = BASE_POINTS_SCHEMA
        if any_cmc or (estimator_every and t % estimator_every == estimator_every - 1):
            schema = _append(schema, ESTIMATOR_FIELDS)
        if extra_points_columns:
            schema = _append(schema, [pa.field(n, pa.float64()) for n in extra_points_columns])
        task_rows = [dict(rows[i]) for i in idx]
        for r in task_rows:
            if schema.get_field_index("estimator") >= 0 and "estimator" not in r:
                n = r["trials"]
                r.update(estimator="naive", p_race_est=r["race"] / n, p_race_var=r["race"] / n / n,
                         p_bad_est=(r["race"] + r["hang"] + r["timeout"]) / n, p_bad_var=0.0)
            for name, fn in (extra_points_columns or {}).items():
                r[name] = fn(r)
        _atomic_write_table(pa.Table.from_pylist(task_rows, schema=schema), path / "points" / f"task-{t:06d}.parquet")
        if events:
            ev = [e for i in idx for e in ev_rows[i]]
            if ev:
                _atomic_write_table(pa.Table.from_pylist(ev, schema=EVENTS_SCHEMA),
                                    path / "events" / f"task-{t:06d}.parquet")
    _write_manifest(path, sweep, seed, len(pts), n_tasks)
    return path


def _append(schema: pa.Schema, fields: Sequence[pa.Field]) -> pa.Schema:
    """`schema` plus `fields` (a field already there is replaced, never duplicated)."""
    for f in fields:
        i = schema.get_field_index(f.name)
        schema = schema.set(i, f) if i >= 0 else schema.append(f)
    return schema


def _events_for(rng: np.random.Generator, sweep: str, pid: str, shard: int,
                p: Mapping[str, Any], c: Mapping[str, int]) -> list[dict[str, Any]]:
    trials = sum(c.values())
    n_ev = sum(c[o] for o in EVENT_OUTCOMES)
    if n_ev == 0:
        return []
    idx = np.sort(rng.choice(trials, size=n_ev, replace=False))
    kinds = [o for o in EVENT_OUTCOMES for _ in range(c[o])]
    rng.shuffle(kinds)
    t_nmi = p["timeout_us"] * p["udelay_factor"] + p["console_us"]
    out = []
    for trial, kind in zip(idx.tolist(), kinds):
        race = kind == "race"
        out.append({
            "sweep": sweep, "point_id": pid, "shard": shard, "trial": int(trial), "outcome": kind,
            "t_done_us": None if kind == "hang" else t_nmi + float(rng.exponential(p["wbinvd_us"])),
            "nmi_sent": int(rng.integers(1, 4)),
            "racers": int(rng.integers(1, 3)) if race else 0,
            "overlap_us": float(p["handoff_us"] + rng.exponential(p["wbinvd_us"])) if race else None,
            "first_racer_cpu": int(rng.integers(1, p["n_cpus"])) if race else None,
        })
    return out


def _spec_toml(sweep: str, seed: int, pts: Sequence[Point]) -> str:
    axes: dict[str, list] = {}
    for pt in pts:
        for k, v in pt.params.items():
            axes.setdefault(k, [])
            if v not in axes[k]:
                axes[k].append(v)
    trials = max((sum(sum(s.values()) for s in pt.shards) for pt in pts), default=0)
    lines = [f'name = "{sweep}"', f"seed = {seed}", f"trials = {trials}", "", "[axes]"]
    for k, vs in axes.items():
        lines.append(f"{k} = {json.dumps(vs)}")
    return "\n".join(lines) + "\n"


def stored_spec_hash(path: Path) -> str:
    """The spec_hash of the set's spec.toml as stoprace reads it back (sweeps.integrity checks it
    against the manifest); a spec stoprace cannot parse gets the hash of its bytes."""
    from sweeps.spec import SpecError, parse_spec

    text = (path / "spec.toml").read_text()
    try:
        return parse_spec(text, force=True, stored=True).spec_hash
    except SpecError:
        return hashlib.sha256(text.encode()).hexdigest()


def _write_manifest(path: Path, sweep: str, seed: int, n_points: int, n_tasks: int) -> None:
    spec_hash = stored_spec_hash(path)
    manifest = {"spec_hash": spec_hash, "version": "0.1.0", "created": "2025-06-16T00:00:00Z",
                "sweep": sweep, "seed": seed, "n_points": n_points, "n_tasks": n_tasks,
                "tasks_done": list(range(n_tasks))}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))


# --------------------------------------------------------------------------- bulk (benchmarks)


def bulk_rows(chunk: np.ndarray, rng: np.random.Generator, *, shards_per_point: int = 8,
              sweep: str = "bulk", axes: Mapping[str, Sequence[Any]] | None = None) -> pa.Table:
    """Points rows number `chunk` (row i is shard i % shards_per_point of point i // shards_per_point),
    in the store's schema; see write_bulk. With `axes` (name -> values), point j is cell j of their full
    grid (the last axis varying fastest, wrapping around after the last cell) instead of the default
    n_cpus x wbinvd_us pattern."""
    n = len(chunk)
    cpus = np.array([2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], np.int32)
    pidx = chunk // shards_per_point
    shard = (chunk % shards_per_point).astype(np.int32)
    cols: dict[str, pa.Array] = {
        "sweep": pa.array(np.full(n, sweep, object), pa.string()),
        "point_id": pa.array(np.char.mod("%016x", pidx.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)).astype(object), pa.string()),
        "shard": pa.array(shard),
    }
    cell = None
    if axes:
        sizes = [len(v) for v in axes.values()]
        cell = dict(zip(axes, np.unravel_index(pidx % int(np.prod(sizes)), sizes)))
    for name in PARAM_NAMES:
        v = DEFAULTS[name]
        if cell is not None and name in cell:
            arr = pa.array(np.asarray(list(axes[name]))[cell[name]])  # type: ignore[index]
        elif cell is not None:
            arr = pa.array([v] * n)
        elif name == "n_cpus":
            arr = pa.array(cpus[pidx % len(cpus)])
        elif name == "wbinvd_us":
            arr = pa.array(10.0 ** (2 + (pidx // len(cpus)) % 50 / 10.0))
        else:
            arr = pa.array([v] * n)
        cols[name] = arr.cast(PARAM_TYPES[name])
    trials = np.full(n, 100_000, np.int64)
    race = rng.poisson(2.0, n).astype(np.int64)
    hang = rng.poisson(0.2, n).astype(np.int64)
    timeout = np.zeros(n, np.int64)
    nmi_clean = rng.poisson(100.0, n).astype(np.int64)
    clean = trials - race - hang - timeout - nmi_clean
    cols["trials"] = pa.array(trials)
    for name, a in zip(OUTCOMES, (clean, nmi_clean, timeout, race, hang)):
        cols[name] = pa.array(a)
    hist = np.zeros((n, N_BINS), np.int64)
    centre = (BINS_PER_DECADE * np.log10(cols["wbinvd_us"].to_numpy())).astype(int) + 1
    for d, share in ((-2, 0.1), (-1, 0.2), (0, 0.4), (1, 0.2), (2, 0.1)):
        hist[np.arange(n), np.clip(centre + d, 0, N_BINS - 1)] += (clean * share).astype(np.int64)
    hist[np.arange(n), np.clip(centre, 0, N_BINS - 1)] += clean - hist.sum(axis=1)
    hist[:, 96] += nmi_clean + race
    finite = hist.sum(axis=1)
    cols["t_done_sum_us"] = pa.array((hist * _MID).sum(axis=1))
    cols["t_done_max_us"] = pa.array(np.where(finite > 0, _MID[96], np.nan))
    cols["t_done_hist"] = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (n + 1) * N_BINS, N_BINS, dtype=np.int32)), pa.array(hist.ravel()))
    cols["seed"] = pa.array(pidx.astype(np.uint64))
    cols["wall_s"] = pa.array(np.full(n, 0.5))
    table = pa.Table.from_pydict(cols)
    table = table.cast(pa.schema([POINTS_SCHEMA.field(n) for n in table.column_names]))
    return table


def write_bulk(
    path: str | Path,
    n_rows: int,
    *,
    shards_per_point: int = 8,
    n_files: int = 8,
    sweep: str = "bulk",
    seed: int = 0,
    axes: Mapping[str, Sequence[Any]] | None = None,
) -> Path:
    """A large result dir built with numpy (no per-row Python): n_rows points rows, no events.

    Points vary n_cpus and wbinvd_us (or form the full grid of `axes`, see bulk_rows); each shard
    has 100,000 trials with a few races and hangs; histograms hold ~6 non-empty bins, like real shards.
    """
    path = Path(path)
    (path / "points").mkdir(parents=True, exist_ok=True)
    (path / "events").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_points = math.ceil(n_rows / shards_per_point)
    for f, chunk in enumerate(np.array_split(np.arange(n_rows), n_files)):
        table = bulk_rows(chunk, rng, shards_per_point=shards_per_point, sweep=sweep, axes=axes)
        _atomic_write_table(table, path / "points" / f"task-{f:06d}.parquet")
    (path / "spec.toml").write_text(f'name = "{sweep}"\nseed = {seed}\ntrials = {100_000 * shards_per_point}\n')
    _write_manifest(path, sweep, seed, n_points, n_files)
    return path
