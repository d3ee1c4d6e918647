"""Ctrl-C on a real `stoprace run` process (issue 24 item 4), sent as a terminal sends it: SIGINT to
the whole process group (the driver and the embedded Ray's processes).

- once: the run stops cleanly, exit 130, one line saying how many tasks are stored; the same
  command resumes to the rows of an uninterrupted run;
- twice (the second while the first one's stop is under way, i.e. while Ray shuts down): the
  process exits at once with 130, never a signal death (it was SIGSEGV, rc -11), with a line
  saying what was kept; that is exactly what the manifest commits, no Ray process of the run is
  left behind, and the same command resumes to the same rows.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from sweep_helpers import SLOW_SPEC, cli, finish, same_results, stored, wait_for, write_spec

pytestmark = pytest.mark.slow

KEPT = re.compile(r"interrupted: (\d+) of (\d+) tasks stored in (\S+); run the same command again to resume")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    spec = write_spec(tmp, SLOW_SPEC)
    finish(cli("run", str(spec), "--out", str(tmp / "ref"), "--workers", "2", "--no-progress"), 300)
    return spec, tmp / "ref"


def _group_gone(pgid: int, timeout: float = 60) -> bool:
    """True once no process of the group is left (the run's Ray processes die with the driver)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _start(spec, out):
    proc = cli("run", str(spec), "--out", str(out), "--workers", "1", "--no-progress")
    wait_for(lambda: stored(out) >= 2, 180, "two stored tasks", proc)
    return proc


SUMMARY = re.compile(r"(\d+) tasks \((\d+) run, (\d+) already stored\)")


def _resume_equals(spec, out, ref_out, kept: int) -> None:
    """The same command runs exactly the tasks not kept, and the set equals the uninterrupted run's."""
    text, _ = finish(cli("run", str(spec), "--out", str(out), "--workers", "2", "--no-progress"), 300)
    m = SUMMARY.search(text)
    assert m and int(m[3]) == kept and int(m[2]) == int(m[1]) - kept, text
    same_results(out, ref_out)


def test_one_ctrl_c_stops_cleanly_and_resumes(ref, tmp_path):
    spec, ref_out = ref
    out = tmp_path / "out"
    proc = _start(spec, out)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    m = KEPT.search(err)
    assert m and "Traceback" not in err, err[-3000:]
    kept = int(m[1])
    assert kept == stored(out) >= 2 and kept < int(m[2])
    assert not list(out.rglob("*.tmp")) and not (out / "writer.lock").exists()
    assert "second Ctrl-C" not in err
    assert _group_gone(proc.pid)
    _resume_equals(spec, out, ref_out, kept)


def test_second_ctrl_c_during_shutdown_exits_at_once_with_130(ref, tmp_path):
    spec, ref_out = ref
    out = tmp_path / "out"
    proc = _start(spec, out)
    os.killpg(proc.pid, signal.SIGINT)
    t_first = time.monotonic()
    time.sleep(0.1)
    # more Ctrl-Cs while it stops (a user pressing again): the first one that lands ends the process
    while proc.poll() is None and time.monotonic() - t_first < 60:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"rc {proc.returncode} (a signal death if negative): {err[-3000:]}"
    lines = [ln for ln in err.splitlines() if ln.startswith("stoprace run:")]
    assert lines and lines[-1].endswith("(second Ctrl-C: stopped at once)"), err[-3000:]
    m = KEPT.search(lines[-1])
    assert m and "Traceback" not in err, err[-3000:]
    kept = int(m[1])
    assert kept == stored(out) >= 2, "the line says what the manifest commits"
    assert not list(out.rglob("*.tmp"))
    assert _group_gone(proc.pid), "Ray processes of the interrupted run are left behind"
    # the writer lock of a process that exited at once is stale: the resume takes it over
    _resume_equals(spec, out, ref_out, kept)


def test_sigterm_stops_an_in_process_run_cleanly(ref, tmp_path):
    """The in-process path (no Ray) stops on SIGTERM as on Ctrl-C: finished tasks committed, SweepInterrupted,
    and the same spec resumes to the uninterrupted rows."""
    import subprocess
    import sys

    from sweep_helpers import ROOT

    spec, ref_out = ref
    out = tmp_path / "out"
    code = ("import sys; from sweeps.runner import SweepInterrupted, run\n"
            "try:\n    run(sys.argv[1], sys.argv[2], in_process=True, progress=False)\n"
            "except SweepInterrupted as e:\n    print(e, file=sys.stderr); sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(spec), str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: stored(out) >= 2, 180, "two stored tasks", proc)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    m = re.search(r"interrupted: (\d+) tasks stored in ", err)  # the API has no start line: no total
    assert m and int(m[1]) == stored(out) >= 2, err[-3000:]
    assert not (out / "writer.lock").exists()
    _resume_equals(spec, out, ref_out, int(m[1]))
