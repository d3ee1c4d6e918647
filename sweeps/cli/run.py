"""`stoprace run`: a sweep spec on Ray into a results directory (resumable)."""

from __future__ import annotations

import argparse
import os
import sys

from sweeps.cli.args import add_scheduling_options, count_arg
from sweeps.errors import UsageError

COMMANDS = {"run": "run a sweep spec on Ray (embedded by default) into a results dir"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module\'s subcommand(s) to the `stoprace` parser."""
    from sweeps.guards import IN_PROCESS_CPU_S

    p = sub.add_parser(
        "run",
        help=COMMANDS["run"],
        description=(
            "Run every (point, shard) of SPEC.toml as Ray tasks and store the results as Parquet "
            "(SCHEMA.md). Runs on an embedded Ray unless --address or RAY_ADDRESS names a cluster; a sweep "
            f"of under {IN_PROCESS_CPU_S:g} CPU-seconds runs in this process without starting Ray unless "
            "--address/--workers is given. "
            "Re-running on the same --out resumes: only tasks not stored yet are run; a dir holding "
            "a different spec is refused. Ctrl-C keeps every finished task (a second Ctrl-C stops at once, "
            "exit 130). A spec that does not name "
            "model_rev runs model revision 2 (MODEL.md); a dir stored before model_rev existed holds "
            "revision 1 and is resumed only by a spec that pins model_rev = 1 under [base]."
        ),
    )
    p.add_argument("spec", metavar="SPEC.toml", help="sweep spec (see examples/)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="results dir (default ./results/<sweep name>): a path, or a URI: file:///..., s3://bucket/prefix, gs://...",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster address, HEAD:6379 (default: $RAY_ADDRESS, else embedded Ray); see also `stoprace submit`",
    )
    p.add_argument(
        "--workers",
        type=count_arg,
        metavar="N",
        help=(
            "CPUs of the embedded Ray (default: all cores). Not with --address/$RAY_ADDRESS (an error): "
            "a cluster has the CPUs it was started with; bound a run there with --max-in-flight"
        ),
    )
    p.add_argument(
        "--no-ship",
        action="store_true",
        help=(
            "with a cluster: do not upload core/sweeps/cluster as runtime_env py_modules "
            "(the cluster's nodes have stoprace installed)"
        ),
    )
    add_scheduling_options(p)
    p.add_argument("--break-lock", action="store_true",
                   help="take --out's writer lock even if another run holds it (only if that run is gone, e.g. "
                        "on another host that crashed)")
    p.add_argument("--resume", action="store_true", help="resume into an existing --out (the default; accepted for clarity)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when stderr is not a terminal)")
    p.set_defaults(func=handle)


def _exit_at_once(e: BaseException) -> None:
    """A second Ctrl-C while the first one's stop is under way: say what is stored, end this process's own
    children (an embedded Ray: its GCS, raylet, agents and workers, which would otherwise outlive it) and
    exit 130 now, without unwinding through Ray's shutdown (a KeyboardInterrupt there can end the process
    with a signal: SIGSEGV was seen)."""
    try:
        print(f"stoprace run: {e} (second Ctrl-C: stopped at once)", file=sys.stderr, flush=True)
        sys.stdout.flush()
        _kill_children()
    finally:
        os._exit(130)


def _kill_children() -> None:
    """SIGKILL every descendant of this process (psutil comes with ray[default]; without it, nothing).

    Stopped first, then listed again and killed: a raylet forking a worker between the listing and
    its own kill would otherwise leave that worker behind, orphaned and out of reach."""
    try:
        import psutil
    except ImportError:
        return
    me = psutil.Process()

    def descendants() -> dict[int, psutil.Process]:
        try:
            return {k.pid: k for k in me.children(recursive=True)}
        except psutil.Error:
            return {}

    kids = descendants()
    for k in kids.values():
        try:
            k.suspend()
        except psutil.Error:
            pass
    kids.update(descendants())  # anything forked before its parent stopped
    for k in kids.values():
        try:
            k.kill()
        except psutil.Error:
            pass


def handle(args: argparse.Namespace) -> int:
    """Carry out the subcommand from parsed arguments; returns the exit code."""
    from cluster.connect import resolve_address
    from sweeps.guards import machine_cpus
    from sweeps.runner import SweepInterrupted, run
    from sweeps.spec import load_spec
    from sweeps.store import is_uri

    target = resolve_address(args.address)
    if args.workers is not None and target is not None:
        where = "--address" if args.address else "$RAY_ADDRESS"
        raise UsageError(
            f"--workers sizes the embedded Ray; with {where} ({target}) the cluster has the CPUs it was "
            f"started with: bound the run with --max-in-flight N instead"
        )
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    workers = args.workers
    if workers is not None and workers > machine_cpus():
        workers = machine_cpus()  # more Ray workers than CPUs only oversubscribes them
        print(f"stoprace run: --workers {args.workers} is more than this machine's {workers} CPUs: using {workers}",
              file=sys.stderr)
    out = args.out
    if out is not None and not is_uri(out):
        out = os.path.expanduser(out)  # also when no shell expanded it (a Ray Job's entrypoint)
    spec = load_spec(args.spec, force=args.force)
    try:
        rep = run(
            spec,
            out,
            address=args.address,
            num_cpus=workers,
            max_in_flight=args.max_in_flight,
            retries=args.retries,
            progress=False if args.no_progress else None,
            ship=not args.no_ship,
            force=args.force,
            announce=lambda plan: print(f"stoprace run: {plan.line()}", file=sys.stderr, flush=True),
            break_lock=args.break_lock,
            on_second_interrupt=_exit_at_once,
        )
    except SweepInterrupted as e:
        print(f"stoprace run: {e}", file=sys.stderr)
        return 130
    for d in rep.repaired[:3]:
        print(f"stoprace run: {d.path} {d.reason}: ran its tasks {d.tasks.describe()} again", file=sys.stderr)
    if len(rep.repaired) > 3:
        print(f"stoprace run: and {len(rep.repaired) - 3} more damaged files, their tasks ran again", file=sys.stderr)
    rate = rep.cpu_trials / rep.seconds if rep.seconds > 0 else 0.0
    print(
        f"{spec.name}: {rep.n_tasks} tasks ({rep.tasks_run} run, {rep.tasks_skipped} already stored) "
        f"in {rep.seconds:.1f} s, {rate / 1e6:.1f} M CPU-trials/s -> {rep.out}"
    )
    for row in rep.search or ():  # a [search] spec: the boundary per combination of the other axes
        axes = " ".join(f"{a.name}={row[a.name]}" for a in spec.axes)
        flag = "" if row["monotone"] else "  NOT MONOTONE in n_cpus"
        print(f"  {axes or '(all)'}: {row['result']} ({row['probes']} probes){flag}")
    return 0
