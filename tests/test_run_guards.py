"""Run-size guards (issue 15, item 4): a start line on every run, --force above the size bounds,
simulate's trials capped like a spec's, --workers clamped to the machine, plots within a pixel budget."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - 3.10
    import tomli as tomllib

from sweeps.cli import main
from sweeps.grid import iter_tasks
from sweeps.guards import MAX_CPU_TRIALS, MAX_TASKS, approx, check_size, estimated_tasks, format_seconds
from sweeps.spec import SpecError, load_spec, parse_spec

from sweep_helpers import ROOT, pin_rev1, stored

FIXTURE_SPEC = ROOT / "tests" / "fixtures" / "release1-naive" / "spec.toml"


def _cpu_trials_by_hand(spec_file: Path) -> int:
    """sum over points of n_cpus x trials, from the TOML itself (not from sweeps.grid)."""
    raw = tomllib.loads(spec_file.read_text())
    n_cpus = raw["axes"]["n_cpus"]
    others = 1
    for name, values in raw["axes"].items():
        if name != "n_cpus":
            others *= len(values)
    return raw["trials"] * sum(n_cpus) * others


def _stoprace(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_start_line_without_a_tty_clamped_workers_and_one_token_auth_line(tmp_path):
    """Not a TTY (captured pipes): the run still says its size, tasks, CPUs and ETA first; --workers 1000
    on this machine is clamped with a note; Ray's token-auth warning is replaced by one clause."""
    out = tmp_path / "out"
    r = _stoprace("run", str(FIXTURE_SPEC), "--out", str(out), "--workers", "1000")
    assert r.returncode == 0, r.stderr
    cpus = len(os.sched_getaffinity(0))
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("stoprace run:")]
    assert lines[0] == f"stoprace run: --workers 1000 is more than this machine's {cpus} CPUs: using {cpus}"
    start = lines[1]
    total = _cpu_trials_by_hand(FIXTURE_SPEC)
    n_tasks = stored(out)  # what the run really stored, counted from the files
    assert n_tasks == 16
    assert f"release1-naive: 8 points, {total:,} CPU-trials, {n_tasks} tasks;" in start
    assert f"running {total:,} CPU-trials on {cpus} CPUs (embedded Ray" in start
    assert re.search(r"ETA (< 1 s|~[0-9.]+ (s|min|h|days|years))$", start), start
    # Ray's own warning (a timestamped log line with a URL) is gone; its meaning is said once
    assert "authentication_token_setup" not in r.stderr and "RAY_AUTH_MODE=disabled" not in r.stderr
    assert r.stderr.count("token auth") == 1 and "token auth: only holders of" in start
    # stdout keeps only the result line
    assert r.stdout.strip().startswith("release1-naive: 16 tasks (16 run, 0 already stored)")


def test_resumed_run_says_how_much_is_stored(tmp_path, capsys, ray_session):
    import shutil

    import pyarrow.parquet as pq

    d = tmp_path / "partial"
    shutil.copytree(ROOT / "tests" / "fixtures" / "release1-partial", d)
    # what is stored, summed from the files themselves
    stored_cpu_trials = 0
    for f in (d / "points").glob("task-*.parquet"):
        t = pq.read_table(f, columns=["n_cpus", "trials"])
        stored_cpu_trials += sum(a * b for a, b in zip(t["n_cpus"].to_pylist(), t["trials"].to_pylist()))
    (tmp_path / "pinned.toml").write_text(pin_rev1((d / "spec.toml").read_text()))
    assert main(["run", str(tmp_path / "pinned.toml"), "--out", str(d)]) == 0
    err = capsys.readouterr().err
    start = next(ln for ln in err.splitlines() if " running " in ln)
    total = _cpu_trials_by_hand(d / "spec.toml")
    assert "16 tasks (10 stored)" in start  # the fixture's manifest commits tasks 0-9
    assert f"running {total - stored_cpu_trials:,} CPU-trials on 2 CPUs (the Ray session already up" in start
    assert 0 < stored_cpu_trials < total


def test_huge_trials_need_force_and_write_nothing(tmp_path):
    text = FIXTURE_SPEC.read_text().replace("trials = 600\n", "trials = 1_000_000_000_000_000\n")
    spec_file = tmp_path / "big.toml"
    spec_file.write_text(text)
    t0 = time.monotonic()
    r = _stoprace("run", str(spec_file), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "--force" in err and "CPU-trials" in err
    assert approx(_cpu_trials_by_hand(spec_file)) in err  # 2.88e17, said as computed by hand
    assert not (tmp_path / "o").exists()
    assert time.monotonic() - t0 < 60  # refused before planning 2e13 shards (not a timing test: a hang guard)
    # the Python API has the same guard, and force lifts it
    spec = load_spec(spec_file)
    with pytest.raises(SpecError, match="--force"):
        check_size(spec)
    check_size(spec, force=True)
    r = _stoprace("submit", str(spec_file), "--address", "http://127.0.0.1:1")
    assert r.returncode == 2 and "--force" in r.stderr  # refused before contacting the cluster


def test_too_many_tasks_need_force():
    # 1000 points x 2e7 one-trial shards = 2e10 shards, at most 1e4 per task: ~2e6 tasks, but only
    # 4e10 CPU-trials (n_cpus 2), so it is the task guard that refuses it
    spec = parse_spec({"name": "many", "seed": 1, "trials": 20_000_000, "shard_trials": 1,
                       "base": {"n_cpus": 2}, "axes": {"p_stall": {"linspace": [0.0, 0.5], "num": 1000}}})
    assert 2 * 20_000_000 * 1000 < MAX_CPU_TRIALS
    assert estimated_tasks(spec) == 2 * 10**10 // 10_000 > MAX_TASKS
    with pytest.raises(SpecError, match="tasks is above"):
        check_size(spec)


@pytest.mark.parametrize("spec_file", ["examples/tdx-kexec-small.toml", "examples/tdx-kexec-rare.toml",
                                       "examples/tdx-kexec-cluster.toml", "tests/fixtures/release1-naive/spec.toml"])
def test_task_estimate_is_close_to_the_plan(spec_file):
    """The estimate (used above EXACT_TASK_COUNT_POINTS points and by the guard) within 20% of the real plan."""
    spec = load_spec(ROOT / spec_file)
    exact = sum(1 for _ in iter_tasks(spec))
    assert 0.8 * exact <= estimated_tasks(spec) <= 1.2 * exact
    check_size(spec)  # every documented example is within the guards


def test_simulate_caps_trials_like_the_spec(capsys):
    assert main(["simulate", "--trials", "1e16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--trials 1e16 is above 1e15" in err
    # 1e12 trials x 64 CPUs = 6.4e13 CPU-trials: above the guard, needs --force
    assert main(["simulate", "--trials", "1e12", "--n-cpus", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "6.4e13 CPU-trials" in err and "--force" in err
    # within the guard: runs (and says nothing extra when it is short)
    assert main(["simulate", "--trials", "1000"]) == 0
    assert capsys.readouterr().err == ""


def test_long_simulate_says_its_eta_first():
    """A simulate estimated above 10 s prints its size and ETA on stderr before computing (killed at once)."""
    p = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "simulate", "--trials", "1e9", "--n-cpus", "64"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
    finally:
        p.kill()
        p.communicate()
    assert line.startswith("stoprace simulate: 6.4e10 CPU-trials in this process, ETA ~")
    # 6.4e10 at the planner's 3e7 CPU-trials/s is 2133 s
    assert format_seconds(6.4e10 / 3e7, about=True) in line


def test_plot_above_the_pixel_budget_is_one_line(tmp_path, capsys):
    from queries.db import QueryError
    from queries.plot import MAX_PIXELS, check_pixels

    d = ROOT / "tests" / "fixtures" / "release1-naive"
    out = tmp_path / "x.png"
    assert main(["plot", str(d), "--x", "n_cpus", "--size", "99x99", "--dpi", "1200", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "118,800x118,800 pixels" in err and "lower --size or --dpi" in err
    assert not out.exists()
    # the budget's edge: exactly MAX_PIXELS passes, one pixel row more does not; Agg's side limit too
    check_pixels((MAX_PIXELS / 1000 / 100, 10.0), 100)
    with pytest.raises(QueryError):
        check_pixels((MAX_PIXELS / 1000 / 100, 10.01), 100)
    with pytest.raises(QueryError, match="a side"):
        check_pixels((700.0, 1.0), 100)
    # a normal plot still works (and says its pixel size)
    assert main(["plot", str(d), "--x", "n_cpus", "-o", str(out)]) == 0
    assert "800x600 px" in capsys.readouterr().out and out.stat().st_size > 0


SEARCH_SPEC = """
name = "wide-search"
seed = 3
trials = "auto"
[precision]
target = 1e-6
max_trials = 100_000_000
[search]
n_cpus = [2, 8192]
[axes]
p_stall = [0.01, 0.02, 0.05]
"""


def _search_probes_by_hand(lo: int, hi: int, boundary: int) -> list[int]:
    """The probes of a bisection whose probes pass exactly at n_cpus <= boundary (sweeps.search's steps)."""
    import math

    probes, a, b = [lo, hi], lo, hi
    if boundary < lo or boundary >= hi:
        return probes
    while (b - a) / 2 > max(1.0, 0.05 * (a + b) / 2):
        m = min(max(math.floor(math.sqrt(a * b) + 0.5), a + 1), b - 1)
        probes.append(m)
        a, b = (m, b) if m <= boundary else (a, m)
    return probes


def test_search_spec_is_sized_over_its_searched_range(tmp_path):
    # 3 combinations; sized at the grid's base n_cpus (64) it was 3 x 64 x 1e8 = 1.9e10 CPU-trials and
    # passed; its probes run at up to 8192 CPUs, the longest bisection summing to ~38,000 CPUs
    spec_file = tmp_path / "search.toml"
    spec_file.write_text(SEARCH_SPEC)
    worst = max(sum(_search_probes_by_hand(2, 8192, n)) for n in range(1, 8193))
    by_hand = 3 * worst * 100_000_000
    assert 3 * 64 * 100_000_000 < MAX_CPU_TRIALS < by_hand
    from sweeps.guards import planned_cpu_trials, search_probe_bound

    spec = load_spec(spec_file)
    assert planned_cpu_trials(spec) == by_hand
    assert search_probe_bound(2, 8192)[0] == max(len(_search_probes_by_hand(2, 8192, n)) for n in range(1, 8193))
    r = _stoprace("run", str(spec_file), "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "--force" in err and f"{approx(by_hand)} CPU-trials" in err, err
    assert not (tmp_path / "o").exists()
    # a narrow search of the same spec is within the guard
    narrow = load_spec(spec_file.write_text(SEARCH_SPEC.replace("[2, 8192]", "[2, 64]")) and spec_file)
    assert planned_cpu_trials(narrow) == 3 * max(sum(_search_probes_by_hand(2, 64, n)) for n in range(1, 65)) * 10**8
    check_size(narrow)
