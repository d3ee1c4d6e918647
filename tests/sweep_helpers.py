"""Helpers for end-to-end sweep tests: small specs, reading a results dir back, running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]

SMALL_SPEC = """
name = "e2e-small"
seed = 7
trials = 3000
shard_trials = 1000
task_seconds = 0.05

[base]
p_unresponsive = 0.002
stall_median_us = 1.0e6
stall_sigma = 0.05
nmi_jitter_us = 1000.0

[axes]
n_cpus = [4, 16]
p_stall = [0.05, 0.5]
wait = [0, 1]
"""


def pin_rev1(text: str) -> str:
    """A result set's spec.toml from before model_rev existed, as a user's spec that resumes it: pinned
    at model_rev = 1 (a spec that leaves model_rev out runs revision 2 and is refused there)."""
    assert "model_rev" not in text
    return text.replace("[base]\n", "[base]\nmodel_rev = 1\n", 1)


def write_spec(tmp: Path, text: str = SMALL_SPEC, name: str = "spec.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def read_dir(d: Path | str, what: str = "points") -> pa.Table:
    """Every committed row of points or events (read through the manifest), sorted so runs compare
    regardless of task order and of how rows are grouped into files."""
    from queries.resultset.reader import ResultSet

    t = ResultSet.open(d).read_table(what)
    if t.num_rows == 0:
        return pa.table({})
    keys = [("point_id", "ascending"), ("shard", "ascending")]
    if what == "events":
        keys.append(("trial", "ascending"))
    return t.sort_by(keys)


def data_file(d: Path | str, rel: str) -> Path:
    """Where the file a manifest lists as ``rel`` (``points/seg-....parquet``) lies: under .data/ in
    format 3 (points/ then holds links to it), in points/ itself in older sets."""
    import json

    from queries.resultset.layout import physical

    m = json.loads((Path(d) / "manifest.json").read_text())
    return Path(d) / physical(m.get("data_dir", ""), rel)


def without_wall(t: pa.Table) -> pa.Table:
    return t.drop_columns(["wall_s"]) if "wall_s" in t.column_names else t


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start `stoprace ARGS` in its own process group (so a test can signal it)."""
    e = dict(os.environ, **(env or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps.cli", *args],
        cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, **kw,
    )


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# Big enough (~1e8 CPU-trials, ~34 tasks) that a run on one worker can be interrupted part-way.
RACE_AXES = "n_cpus = [256, 1024]\np_stall = [0.001, 0.01]\nwait = [0, 1]"


def race_spec(name: str, seed: int, trials: int | str, shard_trials: int, task_seconds: float, *,
              precision: str | None = None, search: str | None = None, base: str = "", axes: str = RACE_AXES) -> str:
    """A sweep with every outcome (stalls near the 1 s deadline, slow NMIs, both wait paths)
    over n_cpus 256 and 1024: the workhorse of the resume, node-loss and driver-loss tests.
    With trials = "auto", `precision` (and `search`) are the bodies of those tables; `base`
    adds lines to [base], `axes` replaces the axes."""
    trials_line = f'trials = "{trials}"' if isinstance(trials, str) else f"trials = {trials}"
    tables = "".join(f"\n[{t}]\n{body}\n" for t, body in (("precision", precision), ("search", search)) if body)
    return f"""
name = "{name}"
seed = {seed}
{trials_line}
shard_trials = {shard_trials}
task_seconds = {task_seconds}
{tables}
[base]
stall_median_us = 1.0e6
stall_sigma = 0.05
nmi_jitter_us = 1000.0
{base}
[axes]
{axes}
"""


SLOW_SPEC = race_spec("e2e-slow", 11, 20000, 2000, 0.1)


# For multi-node tests (tests/test_cluster.py): ~40 tasks of ~0.3 s, ~12 CPU-s in all, so a
# run on a 2 x 1-CPU cluster lasts long enough to lose a node or its driver part-way.
CLUSTER_SPEC = race_spec("cluster-slow", 13, 40000, 4000, 0.5)


def stored(d: Path) -> int:
    """How many tasks a results dir's manifest commits (0 if it does not exist yet or is being created)."""
    from queries.resultset.manifest import parse_manifest

    try:
        return len(parse_manifest((Path(d) / "manifest.json").read_bytes(), str(d)).done())
    except (OSError, ValueError):
        return 0


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    """Wait for a `cli` process; assert it exited 0; return (stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s: {err[-2000:]}") from None
    assert proc.returncode == 0, f"rc {proc.returncode}: {err[-3000:]}"
    return out, err


def same_results(a: Path, b: Path) -> None:
    """Assert two results dirs hold the same rows (points without wall_s, and events)."""
    assert without_wall(read_dir(a)).equals(without_wall(read_dir(b)))
    assert read_dir(a, "events").equals(read_dir(b, "events"))


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live descendant of `pid`, from /proc (Linux; no psutil needed)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid ...
        if fields and fields[0] != "Z":
            parent[int(entry)] = int(fields[1])
    found, frontier = [], {pid}
    while frontier:
        kids = {p for p, pp in parent.items() if pp in frontier}
        frontier = kids
        for k in kids:
            try:
                with open(f"/proc/{k}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            found.append((k, cmd))
    return found


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"
