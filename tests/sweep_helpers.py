"""Helpers for end-to-end sweep tests: small specs, reading a results dir back, running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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


def write_spec(tmp: Path, text: str = SMALL_SPEC, name: str = "spec.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def read_dir(d: Path, what: str = "points") -> pa.Table:
    """Every row of points/ or events/, sorted so runs compare regardless of task order."""
    files = sorted((d / what).glob("*.parquet"))
    if not files:
        return pa.table({})
    t = pa.concat_tables([pq.read_table(f) for f in files])
    keys = [("point_id", "ascending"), ("shard", "ascending")]
    if what == "events":
        keys.append(("trial", "ascending"))
    return t.sort_by(keys)


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
SLOW_SPEC = """
name = "e2e-slow"
seed = 11
trials = 20000
shard_trials = 2000
task_seconds = 0.1

[base]
stall_median_us = 1.0e6
stall_sigma = 0.05
nmi_jitter_us = 1000.0

[axes]
n_cpus = [256, 1024]
p_stall = [0.001, 0.01]
wait = [0, 1]
"""
