"""Tests for cluster.executor.run_map on a real (embedded, 2-CPU) Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
import ray.cloudpickle

from cluster.connect import connect, resolve_address
from cluster.executor import MAX_BATCH, RunInterrupted, RunStats, batch_size, run_map

# --- task functions -------------------------------------------------------------
# Workers cannot import this test module (tests/ is not on their sys.path), so
# ship its functions by value; real callers pass importable package functions.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: int) -> int:
    return x * x


def fail_on_5(x: int) -> int:
    if x == 5:
        raise ValueError(f"bad task {x}")
    return x


def die_once(task: tuple[int, str]) -> int:
    """SIGKILL our own worker the first time task 3 runs (marker file says if it has)."""
    i, marker_dir = task
    if i == 3:
        marker = Path(marker_dir) / "died-once"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    return i * 10


def with_ray_task_id(x: int) -> tuple[int, str]:
    """x and the id of the Ray task running it (tasks batched into one Ray call share it)."""
    return x, ray.get_runtime_context().get_task_id()


def sleep_unless_zero(x: int) -> int:
    if x != 0:
        time.sleep(60)
    return x


# --- tests ---------------------------------------------------------------------


def test_connect_reuses_initialised_ray(ray_session):
    assert connect() is False  # already up: not ours to shut down
    assert connect(address="127.0.0.1:1") is False  # the live session wins
    assert ray.is_initialized()


def test_resolve_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(None) == "10.0.0.1:6379"
    assert resolve_address("ray://h:10001") == "ray://h:10001"


def test_every_result_once_and_lazy(ray_session):
    n, limit = 200, 4
    pulled = 0
    completed = 0
    max_ahead = 0

    def gen():
        nonlocal pulled, max_ahead
        for i in range(n):
            pulled += 1
            max_ahead = max(max_ahead, pulled - completed)
            yield i

    seen: Counter[int] = Counter()

    def on_result(task: int, result: int) -> None:
        nonlocal completed
        assert result == task * task
        seen[task] += 1
        completed += 1

    stats = run_map(square, gen(), on_result=on_result, max_in_flight=limit, progress=False)
    assert seen == Counter(range(n))  # each task exactly once
    assert 1 < max_ahead <= limit  # bounded, but actually parallel
    assert isinstance(stats, RunStats)
    assert stats.tasks == n and stats.weight == n and stats.max_in_flight == limit
    assert stats.cpus == 2 and stats.seconds > 0
    assert stats.overhead_s_per_task is not None and stats.overhead_s_per_task >= 0
    assert ray.is_initialized()  # we did not start it, so we did not stop it


def test_no_output_when_not_a_tty(ray_session, capfd):
    got: list[int] = []
    run_map(square, list(range(20)), on_result=lambda t, r: got.append(r),
            weight=lambda t: 1000, total_weight=20_000, unit="trials")
    assert sorted(got) == [i * i for i in range(20)]
    out, err = capfd.readouterr()
    assert out == ""
    # nothing of ours on stderr: no bar, no rate, no task counts (Ray's own log lines, e.g.
    # a worker-pool warning on a loaded machine, may appear and are not the display)
    assert "━" not in err and "trials/s" not in err and "tasks" not in err, err


def test_progress_forced_on_renders(ray_session, capfd):
    stats = run_map(square, range(10), on_result=lambda t, r: None, progress=True,
                    weight=lambda t: 500, total_weight=5000, unit="trials",
                    description="sweep")
    assert stats.weight == 5000
    _, err = capfd.readouterr()
    assert "sweep" in err and "trials/s" in err and "10/10 tasks" in err


def test_task_exception_propagates(ray_session):
    got: list[int] = []
    with pytest.raises(ValueError, match="bad task 5"):
        run_map(fail_on_5, range(50), on_result=lambda t, r: got.append(t),
                max_in_flight=4, progress=False)
    assert 5 not in got
    # the session survives a failed map
    assert ray.is_initialized()


def test_killed_worker_is_retried(ray_session, tmp_path):
    seen: Counter[int] = Counter()

    def on_result(task, result):
        assert result == task[0] * 10
        seen[task[0]] += 1

    tasks = [(i, str(tmp_path)) for i in range(8)]
    run_map(die_once, tasks, on_result=on_result, retries=2, max_in_flight=4, progress=False)
    assert (tmp_path / "died-once").exists()  # the kill really happened
    assert seen == Counter(range(8))


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_cancels_in_flight(ray_session, how):
    def on_result(task, result):
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler fires before this finishes

    before = signal.getsignal(signal.SIGTERM)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt) as info:
        run_map(sleep_unless_zero, range(100), on_result=on_result,
                max_in_flight=3, progress=False)
    assert isinstance(info.value, RunInterrupted)
    assert info.value.stats.tasks == 0  # interrupted inside the first on_result
    assert signal.getsignal(signal.SIGTERM) == before  # our SIGTERM handler removed
    # The two 60 s sleepers were killed: both CPUs are free again soon.
    deadline = time.monotonic() + 15
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 2
    got: list[int] = []
    run_map(square, [1, 2], on_result=lambda t, r: got.append(r), progress=False)
    assert sorted(got) == [1, 4]
    assert time.perf_counter() - t0 < 30


OWNED_SESSION_SCRIPT = textwrap.dedent("""
    import ray
    from cluster.executor import RunInterrupted, run_map

    def double(x):
        return 2 * x

    got = []
    def on_result(task, result):
        got.append(result)
        if len(got) == 3:
            raise KeyboardInterrupt

    try:
        run_map(double, range(1000), on_result=on_result, num_cpus=1, max_in_flight=2)
    except RunInterrupted as e:
        print("interrupted", e.stats.tasks, len(got), ray.is_initialized())
""")


def test_owned_session_is_shut_down_on_interrupt():
    """No Ray running: run_map starts an embedded one and shuts it down even on Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", OWNED_SESSION_SCRIPT], env=env,
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # 2 results delivered before the third on_result raised; Ray is down afterwards
    assert proc.stdout.split() == ["interrupted", "2", "3", "False"]


def test_wait_pulls_again_after_results_arrive(ray_session, capfd):
    """A task iterator that depends on results (adaptive waves) yields WAIT; run_map keeps going."""
    from cluster.executor import WAIT

    results: dict[int, int] = {}

    def chain():
        # task i + 1 is only known once task i's result is in: every pull before that is WAIT
        i = 0
        yield 1
        while i < 5:
            if i + 1 in results:
                i += 1
                yield results[i] + 1
            else:
                yield WAIT

    seen = []
    stats = run_map(square, chain(), on_result=lambda t, r: (results.__setitem__(len(results) + 1, r), seen.append(t)),
                    progress=True, describe=lambda: f"chain at {len(results)}")
    # 1 -> 1, 2 -> 4, 5 -> 25, 26 -> 676, 677 -> 458329, 458330
    assert seen == [1, 2, 5, 26, 677, 458330] and stats.tasks == 6
    assert "chain at 6" in capfd.readouterr().err  # the description follows describe()


def test_wait_with_nothing_in_flight_is_a_bug(ray_session):
    from cluster.executor import WAIT

    with pytest.raises(RuntimeError, match="nothing is in flight"):
        run_map(square, iter([WAIT]), on_result=lambda t, r: None, progress=False)


def test_batch_size_packs_batch_s_of_tasks_at_the_mean_task_time():
    assert batch_size(None, 1e-3) == 1  # batching off
    assert batch_size(0.05, None) == 1  # no task timed yet: one task, to learn its time
    assert batch_size(0.05, 1e-3) == 50
    assert batch_size(0.05, 0.02) == 2
    assert batch_size(0.05, 0.05) == 1 and batch_size(0.05, 2.0) == 1  # normal tasks are never batched
    assert batch_size(0.05, 1e-9) == MAX_BATCH and batch_size(0.05, 0.0) == MAX_BATCH


def test_batched_tiny_tasks_share_ray_calls_and_arrive_one_by_one(ray_session):
    n = 600
    seen: Counter[int] = Counter()
    per_call: Counter[str] = Counter()

    def on_result(task: int, result: tuple[int, str]) -> None:
        x, ray_task = result
        assert x == task  # each task's own result, not a neighbour's
        seen[task] += 1
        per_call[ray_task] += 1

    stats = run_map(with_ray_task_id, range(n), on_result=on_result, batch_s=0.05, weight=lambda t: t + 1,
                    progress=False)
    assert seen == Counter(range(n))  # each task exactly once
    assert stats.tasks == n and stats.weight == n * (n + 1) / 2  # counted and weighted per task
    assert stats.calls == len(per_call) < n / 10  # ~10 us tasks: many to a Ray call
    assert 1 < max(per_call.values()) <= MAX_BATCH
    # without batch_s every task is a Ray call of its own
    per_call.clear()
    seen.clear()
    stats = run_map(with_ray_task_id, range(20), on_result=on_result, progress=False)
    assert stats.calls == len(per_call) == 20 and seen == Counter(range(20))


def test_batched_task_exception_propagates(ray_session):
    got: list[int] = []
    with pytest.raises(ValueError, match="bad task 5"):
        run_map(fail_on_5, range(50), on_result=lambda t, r: got.append(t), batch_s=0.05, progress=False)
    assert 5 not in got
    assert ray.is_initialized()


def test_wait_closes_a_batch(ray_session):
    """With batching, a WAIT still sends what is ready at once (the chain would stall otherwise)."""
    from cluster.executor import WAIT

    results: list[int] = []

    def chain():
        yield from (1, 2, 3)  # three ready tasks, then each next one only once the one before is in
        nxt = 4
        while nxt <= 8:
            if nxt - 1 in results:
                yield nxt
                nxt += 1
            else:
                yield WAIT

    seen: list[int] = []

    def on_result(t: int, r: int) -> None:
        seen.append(t)
        results.append(t)

    stats = run_map(square, chain(), on_result=on_result, batch_s=0.05, progress=False)
    assert sorted(seen[:3]) == [1, 2, 3] and seen[3:] == [4, 5, 6, 7, 8] and stats.tasks == 8
