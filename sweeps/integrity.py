"""The verdict on a result set: complete, partial or damaged, and why (one rule for every door).

``check_result_set(location)`` is what ``stoprace query``/``capacity``/``plot``/``replay``/``compact``
and the HTTP API ask before answering from a set. It adds to the format's own check
(queries.resultset.reader.ResultSet.check: sizes and SHA-256 of segments, duplicate and
conflicting listings, first-release task files read whole) what only a sweep knows:

- the stored ``spec.toml`` must still have the manifest's ``spec_hash`` (an edited spec
  would describe rows it did not produce): otherwise the set is *damaged*, with the line
  naming it;
- first-release task files, which have no checksums, must hold exactly the (point, shard)
  pairs, seeds and trial counts the task plan (``sweeps.grid.iter_tasks`` with the plan the
  manifest records) puts in their task, so a file swapped in from another task or another
  sweep is named and left out.

The same expectations serve ``stoprace run``: a resumed run drops what this check rejects
and recomputes it (sweeps.store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from core.vectorized import STREAM_VERSION
from queries.resultset.errors import StoreError
from queries.resultset.layout import MANIFEST, SPEC_FILE
from queries.resultset.manifest import Manifest
from queries.resultset.ranges import RangeSet
from queries.resultset.reader import Expect, Expected, ResultSet
from sweeps.grid import PLANNER_VERSION, iter_tasks
from sweeps.spec import SpecError, SweepSpec, parse_spec

__all__ = ["Verdict", "check_result_set", "stored_spec", "plan_expectation", "spec_problem"]


@dataclass(frozen=True)
class Verdict:
    """A result set's status ("complete", "partial" or "damaged"), the reasons, and the checked set.

    ``line`` is the one line a command prints (None when complete); ``reasons`` the same
    clauses one by one (for an API). ``result_set`` has damaged, duplicated and foreign files
    left out: answer from it (queries.db.connect accepts it) rather than reopening the location.
    """

    location: str
    status: str
    reasons: tuple[str, ...]
    n_tasks: int | None
    tasks_stored: int
    result_set: ResultSet = field(repr=False, compare=False)

    @property
    def line(self) -> str | None:
        return self.result_set.check().problem()


def stored_spec(rs: ResultSet) -> SweepSpec:
    """The spec stored with a result set, parsed as a stored spec; StoreError (one line) if it is not one."""
    try:
        return parse_spec(rs.spec_text(), where=rs.backend.display(SPEC_FILE), force=True, stored=True)
    except (SpecError, StoreError) as e:
        raise StoreError(f"{rs.display}: cannot read the spec of this results dir: {e}") from None


def spec_problem(rs: ResultSet) -> tuple[SweepSpec | None, str | None]:
    """(the stored spec if it matches the manifest, else None; the problem as one clause, else None)."""
    try:
        spec = stored_spec(rs)
    except StoreError as e:
        return None, f"{SPEC_FILE} cannot be read as a spec ({str(e).split(': ', 2)[-1]})"
    if spec.spec_hash != rs.manifest.spec_hash:
        return None, (f"{SPEC_FILE} does not match the spec_hash in {MANIFEST} (edited since the run? its hash "
                      f"{spec.spec_hash[:12]}…, the manifest's {rs.manifest.spec_hash[:12]}…)")
    return spec, None


def plan_expectation(spec: SweepSpec, manifest: Manifest) -> Expect | None:
    """What each first-release task file of ``manifest`` must hold, from ``spec``'s task plan.

    None where there is nothing to check or the plan cannot be reproduced: no per-task files,
    no recorded plan, an adaptive spec, or a plan made by another planner or stream version.
    """
    legacy = RangeSet(manifest.legacy_tasks)
    plan = manifest.plan
    if not legacy or plan is None or spec.precision is not None:
        return None
    if plan.get("planner") != PLANNER_VERSION or plan.get("streams") != STREAM_VERSION:
        return None
    want: dict[int, Expected] = {}
    last = max(legacy)
    try:
        for task in iter_tasks(spec, float(plan["cpu_trials_per_s"]), int(plan["max_shards"]), int(plan["min_tasks"])):
            if task.task_id > last:
                break
            if task.task_id in legacy:
                want[task.task_id] = Expected({(it.point.point_id, k): (it.point.point_seed, it.shard_size(k))
                                               for it in task.items for k in it.shards},
                                              {it.point.point_id: it.point.values for it in task.items})
    except (KeyError, TypeError, ValueError):  # a plan this planner cannot read: no plan check
        return None
    return want.get


def check_result_set(location: str | os.PathLike[str] | ResultSet, *,
                     filesystem: pafs.FileSystem | None = None) -> Verdict:
    """Open (unless given a ResultSet) and check a result set: its verdict and the checked set.

    StoreError (one line) if ``location`` is not a result set at all. The check reads every
    committed file (SHA-256 of segments, first-release task files whole), as a query does.
    """
    rs = location if isinstance(location, ResultSet) else ResultSet.open(location, filesystem)
    spec, problem = spec_problem(rs)
    expect = plan_expectation(spec, rs.manifest) if spec is not None else None
    integrity = rs.check(verify=True, expect=expect, problems=(problem,) if problem else ())
    return Verdict(rs.display, integrity.status, tuple(integrity.reasons()), integrity.n_tasks,
                   len(integrity.intact), rs)
