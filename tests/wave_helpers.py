"""Driving an adaptive wave plan (sweeps.waves) without Ray: synthetic shard rows, tasks
finishing in a random order, an optional kill part-way (test_precision, test_search)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from sweeps.waves import STATS_COLUMNS, WavePlan


def fake_rows(task, p_of: Callable[[dict], float]) -> pa.Table:
    """Deterministic rows per (point, shard): bad ~ Binomial(trials, p_of(point values)), as a shard would be."""
    rows: dict[str, list] = {c: [] for c in STATS_COLUMNS}
    for it in task.items:
        for k in it.shards:
            n = it.shard_size(k)
            bad = int(np.random.default_rng([it.point.point_seed, k]).binomial(n, p_of(it.point.values)))
            for c, v in zip(STATS_COLUMNS, (it.point.point_id, k, n, 0, bad, 0, "naive", 0.0, 0.0, bad / n, 0.0)):
                rows[c].append(v)
    return pa.table(rows)


def drive_plan(plan: WavePlan, p_of: Callable[[dict], float], order_seed: int, limit: int,
               stored: list | tuple = (), kill_after: int | None = None) -> tuple[list[pa.Table], bool]:
    """Feed `stored` rows to `plan`, then run it with up to `limit` tasks in flight finishing in a
    random order; returns (all stored tables, killed). No task is handed out twice; unless killed
    after `kill_after` stored tables, the plan ends finished."""
    stored = list(stored)
    for t in stored:
        plan.add_rows(t)
    rng = random.Random(order_seed)
    flight = []
    ids = set()
    while True:
        while len(flight) < limit and (t := plan.take()) is not None:
            assert t.task_id not in ids, "a task was handed out twice"
            ids.add(t.task_id)
            flight.append(t)
        if not flight:
            break
        t = flight.pop(rng.randrange(len(flight)))
        table = fake_rows(t, p_of)
        stored.append(table)
        plan.task_done(table)
        if kill_after is not None and len(stored) >= kill_after:
            return stored, True
    assert plan.finished
    return stored, False
