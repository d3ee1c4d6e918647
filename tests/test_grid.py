"""sweeps.grid: canonical point ids and seeds, lazy expansion, task planning."""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sweeps.grid as grid_module
from core.params import PARAM_NAMES, Params, canonical_dict, identity_dict, make_params
from core.vectorized import STREAM_VERSION
from sweeps.grid import (
    MAX_SHARDS_PER_TASK,
    Point,
    Task,
    iter_points,
    iter_tasks,
    plan_signature,
    point_at,
    point_seed,
    total_cpu_trials,
    total_shards,
)
from sweeps.spec import SweepSpec, parse_spec


def mk(axes: dict, trials: int = 10, shard_trials: int = 100_000, task_seconds: float = 2.0, base=None, seed=5) -> SweepSpec:
    return parse_spec(
        {
            "name": "g",
            "seed": seed,
            "trials": trials,
            "shard_trials": shard_trials,
            "task_seconds": task_seconds,
            "base": base or {},
            "axes": axes,
        }
    )


SPEC = mk({"n_cpus": [8, 64], "wbinvd_us": {"logspace": [100, 10000], "num": 3}, "mitigation": ["none", "early_flush"]})


def slow_point_id(values: dict) -> str:
    cj = json.dumps(identity_dict(canonical_dict(make_params(values))), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(cj.encode()).hexdigest()[:16]


# ---- points ----------------------------------------------------------------------------


def test_points_order_and_values():
    pts = list(iter_points(SPEC))
    assert [p.index for p in pts] == list(range(12))
    combos = [(p.values["n_cpus"], p.values["wbinvd_us"], p.values["mitigation"]) for p in pts]
    assert combos == list(itertools.product([8, 64], [100.0, 1000.0, 10000.0], ["none", "early_flush"]))
    for p in pts:
        assert list(p.values) == list(PARAM_NAMES)
        assert p.values["handoff_us"] == 100.0
        assert p.params == make_params(p.values)
        assert isinstance(p.params, Params)


def test_point_ids_match_canonical_definition_and_are_distinct():
    pts = list(iter_points(SPEC))
    for p in pts:
        assert p.point_id == slow_point_id(p.values)
        assert re.fullmatch("[0-9a-f]{16}", p.point_id), p.point_id
        # the point seed (sweeps.grid.point_seed): first 8 bytes, big-endian, of SHA-256(f"{seed}:{point_id}")
        digest = hashlib.sha256(f"{SPEC.seed}:{p.point_id}".encode()).digest()
        assert p.point_seed == int.from_bytes(digest[:8], "big")
    assert len({p.point_id for p in pts}) == len(pts)
    assert len({p.point_seed for p in pts}) == len(pts)


def test_point_id_pinned_and_independent_of_sweep():
    # the default point: a change here changes every point id (and seed) ever stored
    d = identity_dict(canonical_dict(Params()))
    cj = json.dumps(d, sort_keys=True, separators=(",", ":"))
    p0 = next(iter_points(mk({})))
    assert p0.point_id == hashlib.sha256(cj.encode()).hexdigest()[:16]
    assert p0.point_id == next(iter_points(mk({}, seed=99, trials=5))).point_id
    assert p0.point_seed != next(iter_points(mk({}, seed=99))).point_seed
    assert p0.point_id == PINNED_DEFAULT_ID
    assert '"model_rev":2' in cj  # the default is not neutral: it is part of the identity
    # the same point at model_rev = 1 (neutral) has the id every release before model_rev gave it
    assert next(iter_points(mk({}, base={"model_rev": 1}))).point_id == PINNED_REV1_ID


PINNED_DEFAULT_ID = "b26f97ea220f96a3"
PINNED_REV1_ID = "3bae7de350deb810"  # the default point's id before model_rev existed


def test_point_seed_definition():
    pid = "0123456789abcdef"
    expect = int.from_bytes(hashlib.sha256(b"5:0123456789abcdef").digest()[:8], "big")
    assert point_seed(5, pid) == expect
    assert point_seed(5, pid) == point_seed(5, pid)
    assert 0 <= point_seed(2**64 - 1, pid) < 2**64
    p = next(iter_points(SPEC))
    assert p.point_seed == point_seed(SPEC.seed, p.point_id)
    assert [q.point_seed for q in iter_points(SPEC)] == [q.point_seed for q in iter_points(SPEC)]


def test_point_at_matches_iteration():
    pts = list(iter_points(SPEC))
    assert [point_at(SPEC, i) for i in range(len(pts))] == pts
    with pytest.raises(IndexError):
        point_at(SPEC, 12)


def test_iter_points_is_lazy_for_huge_grid(monkeypatch):
    spec = parse_spec(
        {
            "name": "huge",
            "seed": 1,
            "trials": 10,
            "axes": {
                "n_cpus": {"range": [2, 102]},
                "wbinvd_us": {"logspace": [1, 1e6], "num": 100},
                "ipi_jitter_us": {"linspace": [0, 50], "num": 100},
                "nmi_jitter_us": {"linspace": [0, 5], "num": 10},
            },
        }
    )
    assert spec.n_points == 10**7
    # lazy = only the points consumed are built (counted, not timed: timing fails on a loaded machine)
    made = []
    make = grid_module._Expander.make
    monkeypatch.setattr(grid_module._Expander, "make", lambda self, i, c: (made.append(i), make(self, i, c))[1])
    first = list(itertools.islice(iter_points(spec), 10))
    assert [p.index for p in first] == list(range(10)) and made == list(range(10))
    made.clear()
    assert point_at(spec, 10**7 - 1).values["n_cpus"] == 101 and made == [10**7 - 1]
    made.clear()
    task = next(iter_tasks(spec))
    # the first task's points, plus at most the one that did not fit
    assert task.task_id == 0 and len(made) <= len(task.items) + 1 and made == list(range(len(made)))
    assert total_cpu_trials(spec) == 10 * sum(range(2, 102)) * 100 * 100 * 10


def test_points_and_tasks_pickle():
    p = next(iter_points(SPEC))
    assert pickle.loads(pickle.dumps(p)) == p
    t = next(iter_tasks(SPEC))
    t2 = pickle.loads(pickle.dumps(t))
    assert t2 == t and t2.items[0].point.params == p.params
    assert isinstance(hash(p), int)


# ---- totals ----------------------------------------------------------------------------


def test_total_cpu_trials_matches_iteration():
    for spec in [SPEC, mk({}), mk({"wbinvd_us": [1, 2, 3]}, base={"n_cpus": 16}, trials=7)]:
        assert total_cpu_trials(spec) == sum(p.values["n_cpus"] * spec.trials for p in iter_points(spec))
        assert total_shards(spec) == spec.n_points * spec.n_shards_per_point


# ---- tasks -----------------------------------------------------------------------------


def check_partition(spec: SweepSpec, tasks: list[Task], max_shards: int = MAX_SHARDS_PER_TASK) -> None:
    assert [t.task_id for t in tasks] == list(range(len(tasks)))
    seen = []
    for t in tasks:
        assert t.items, t
        assert 1 <= t.n_shards <= max_shards
        for it in t.items:
            assert 0 <= it.first < it.stop <= spec.n_shards_per_point
            assert it.trials == spec.trials and it.shard_trials == spec.shard_trials
            assert it.shard_sizes() == tuple(spec.shard_size(k) for k in it.shards)
            assert it.n_trials == sum(it.shard_sizes())
            seen += [(it.point.index, k) for k in it.shards]
    expect = [(i, k) for i in range(spec.n_points) for k in range(spec.n_shards_per_point)]
    assert seen == expect  # every (point, shard) exactly once, in order


def reference_tasks(spec: SweepSpec, cps: float, max_shards: int) -> list[list[tuple[int, int]]]:
    """Per-shard greedy packing: the definition iter_tasks implements in chunks."""
    budget = spec.task_seconds * cps
    tasks, cur, cost = [], [], 0.0
    for p in iter_points(spec):
        for k in range(spec.n_shards_per_point):
            c = p.values["n_cpus"] * spec.shard_size(k)
            if cur and (cost + c > budget or len(cur) >= max_shards):
                tasks.append(cur)
                cur, cost = [], 0.0
            cur.append((p.index, k))
            cost += c
    if cur:
        tasks.append(cur)
    return tasks


def flat(tasks: list[Task]) -> list[list[tuple[int, int]]]:
    return [[(it.point.index, k) for it in t.items for k in it.shards] for t in tasks]


def test_many_small_points_packed():
    spec = mk({"n_cpus": [8, 16], "wbinvd_us": {"linspace": [1, 100], "num": 50}}, trials=1000, task_seconds=1.0)
    tasks = list(iter_tasks(spec, cpu_trials_per_s=1e5, min_tasks=1))  # budget 1e5: 12 points of 8 CPUs per task
    check_partition(spec, tasks)
    assert len(tasks[0].items) == 12 and tasks[0].cpu_trials <= 1e5
    assert all(len(it.shards) == 1 for t in tasks for it in t.items)
    assert flat(tasks) == reference_tasks(spec, 1e5, MAX_SHARDS_PER_TASK)


def test_big_point_split_by_whole_shards():
    spec = mk({}, base={"n_cpus": 100}, trials=1_050_000, shard_trials=100_000, task_seconds=1.0)
    # 11 shards (last 50_000); budget 3e7 cpu-trials = 3 full shards
    tasks = list(iter_tasks(spec, cpu_trials_per_s=3e7, min_tasks=1))
    check_partition(spec, tasks)
    assert [(t.items[0].first, t.items[0].stop) for t in tasks] == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert tasks[-1].items[0].shard_sizes() == (100_000, 50_000)
    assert flat(tasks) == reference_tasks(spec, 3e7, MAX_SHARDS_PER_TASK)


def test_shard_bigger_than_budget_gets_own_task():
    spec = mk({"n_cpus": [2, 4096]}, trials=300, shard_trials=100, task_seconds=1.0)
    tasks = list(iter_tasks(spec, cpu_trials_per_s=1000, min_tasks=1))
    check_partition(spec, tasks)
    assert [t.n_shards for t in tasks] == [3, 1, 1, 1]


def test_max_shards_cap():
    spec = mk({"wbinvd_us": {"linspace": [1, 2], "num": 30}}, trials=10, shard_trials=1, base={"n_cpus": 2})
    tasks = list(iter_tasks(spec, cpu_trials_per_s=1e12, max_shards=7, min_tasks=1))
    check_partition(spec, tasks, max_shards=7)
    assert [t.n_shards for t in tasks] == [7] * 42 + [6]
    assert flat(tasks) == reference_tasks(spec, 1e12, 7)


def test_task_ids_deterministic():
    spec = parse_spec(open(__file__.replace("tests/test_grid.py", "examples/tdx-kexec-small.toml")).read())
    a = list(iter_tasks(spec))
    b = list(iter_tasks(parse_spec(spec.to_toml())))
    assert a == b
    check_partition(spec, a)
    assert plan_signature() == {"planner": 2, "streams": STREAM_VERSION, "cpu_trials_per_s": 3e7,
                                "max_shards": MAX_SHARDS_PER_TASK, "min_tasks": 64}


def test_bad_planning_args():
    with pytest.raises(ValueError, match="cpu_trials_per_s"):
        next(iter_tasks(SPEC, cpu_trials_per_s=0, min_tasks=1))
    with pytest.raises(ValueError, match="max_shards"):
        next(iter_tasks(SPEC, max_shards=0))


@settings(max_examples=80, deadline=None)
@given(
    cpus=st.lists(st.integers(2, 300), min_size=1, max_size=4, unique=True),
    nw=st.integers(1, 5),
    trials=st.integers(1, 500),
    shard_trials=st.integers(1, 200),
    cps=st.sampled_from([1.0, 50.0, 1e3, 1e4, 1e5, 1e9]),
    task_seconds=st.sampled_from([0.1, 1.0, 2.5]),
    max_shards=st.integers(1, 20),
)
def test_tasks_partition_random_grids(cpus, nw, trials, shard_trials, cps, task_seconds, max_shards):
    spec = mk(
        {"n_cpus": cpus, "wbinvd_us": {"linspace": [1, 10], "num": nw}},
        trials=trials,
        shard_trials=shard_trials,
        task_seconds=task_seconds,
    )
    tasks = list(iter_tasks(spec, cpu_trials_per_s=cps, max_shards=max_shards, min_tasks=1))
    check_partition(spec, tasks, max_shards)
    assert flat(tasks) == reference_tasks(spec, cps, max_shards)
    assert sum(t.cpu_trials for t in tasks) == total_cpu_trials(spec)
    budget = task_seconds * cps
    assert all(t.cpu_trials <= budget or t.n_shards == 1 for t in tasks)


def test_point_is_frozen():
    p = next(iter_points(SPEC))
    with pytest.raises(AttributeError):
        p.index = 3  # type: ignore[misc]
    assert isinstance(p, Point)


def test_small_sweep_is_cut_into_at_least_min_tasks():
    # 4 points x 40 shards of tiny cost: one task by the time budget, but >= 32 by min_tasks
    spec = mk({"n_cpus": [4, 8, 16, 32]}, trials=40_000, shard_trials=1000, task_seconds=2.0)
    tasks = list(iter_tasks(spec, min_tasks=32))
    assert len(list(iter_tasks(spec, min_tasks=1))) == 1
    assert 32 <= len(tasks) <= 4 * 40
    check_partition(spec, tasks)
