"""`stoprace run`: a sweep spec on Ray into a results directory (resumable)."""

from __future__ import annotations

import argparse
import sys

from sweeps.cli_simulate import count_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a sweep spec on Ray (embedded by default) into a results dir",
        description=(
            "Run every (point, shard) of SPEC.toml as Ray tasks and store the results as Parquet "
            "(SCHEMA.md). Runs on an embedded Ray unless --address or RAY_ADDRESS names a cluster. "
            "Re-running on the same --out resumes: only tasks not stored yet are run; a dir holding "
            "a different spec is refused. Ctrl-C keeps every finished task."
        ),
    )
    p.add_argument("spec", metavar="SPEC.toml", help="sweep spec (see examples/)")
    p.add_argument("--out", metavar="DIR", help="results dir (default ./results/<sweep name>)")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: $RAY_ADDRESS, else embedded Ray)")
    p.add_argument("--workers", type=count_arg, metavar="N", help="CPUs of the embedded Ray (default: all cores)")
    p.add_argument("--max-in-flight", type=count_arg, metavar="N", help="tasks submitted at once (default 2 x cluster CPUs)")
    p.add_argument("--retries", type=int, default=3, metavar="N", help="retries of a task whose worker died (default 3)")
    p.add_argument("--resume", action="store_true", help="resume into an existing --out (the default; accepted for clarity)")
    p.add_argument("--force", action="store_true", help="allow more than 10 million points")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when stderr is not a terminal)")
    p.set_defaults(func=run_cmd)


def run_cmd(args: argparse.Namespace) -> int:
    from sweeps.runner import SweepInterrupted, run
    from sweeps.spec import load_spec

    spec = load_spec(args.spec, force=args.force)
    try:
        rep = run(
            spec,
            args.out,
            address=args.address,
            num_cpus=args.workers,
            max_in_flight=args.max_in_flight,
            retries=args.retries,
            progress=False if args.no_progress else None,
        )
    except SweepInterrupted as e:
        print(f"stoprace run: {e}", file=sys.stderr)
        return 130
    rate = rep.cpu_trials / rep.seconds if rep.seconds > 0 else 0.0
    print(
        f"{spec.name}: {rep.n_tasks} tasks ({rep.tasks_run} run, {rep.tasks_skipped} already stored) "
        f"in {rep.seconds:.1f} s, {rate / 1e6:.1f} M CPU-trials/s -> {rep.out}"
    )
    return 0
