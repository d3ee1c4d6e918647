"""`stoprace submit | status | logs | stop`: run a sweep as a Ray Job on a remote cluster and watch it.

`submit` ships the sweep spec (as the job's working_dir) and, unless
--no-ship, this stoprace's packages (sweeps.nodes.SHIPPED_PACKAGES, the list
`run --address` ships too, as runtime_env py_modules), so the cluster needs only Ray and the third-party
dependencies (or --pip to have Ray install those per job). The job's
entrypoint is a plain `stoprace run` command, as `PYTHON -m sweeps.cli run ...`
with PYTHON the interpreter Ray runs its workers with on the head (not the first
`python` on the head's PATH, which may lack everything; --python overrides it).
Before the sweep's job, a preflight job (about a second) checks that interpreter
for stoprace's dependencies (sweeps.nodes) and refuses with one line if one is
missing. The job runs on the head node, writes the results dir there (a path on the
head, a shared filesystem mount, or an s3:// / gs:// URI) and resumes like any
`stoprace run`: submitting the same spec with the same --out again runs only
the missing tasks.

Exit codes: 0 done (for `submit --wait`: the job SUCCEEDED), 1 the job FAILED
or was STOPPED (`submit --wait`), 2 bad input (spec, address, job id, an unfit
interpreter, or a job whose `stoprace run` refused with its one line), 130
Ctrl-C (the job keeps running on the cluster).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

from sweeps.cli.args import add_scheduling_options
from sweeps.errors import ClusterError, UsageError

STOP_GRACE_S = 30
"""Seconds Ray gives a stopped job's driver between SIGTERM and SIGKILL (Ray's default is 3):
enough to hand back in-flight work, store the manifest and say so, even on a busy head."""
DEFAULT_REMOTE_OUT = "~/stoprace-results/{name}"
COMMANDS = {
    "submit": "run a sweep spec as a Ray Job on a remote cluster (Ray Jobs API)",
    "status": "status of a Ray Job (or list all jobs) on a cluster",
    "logs": "output of a Ray Job",
    "stop": "stop a Ray Job",
}

_ADDRESS_HELP = (
    "the cluster's Ray Jobs API, i.e. its dashboard: http://HEAD:8265 "
    "(default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS if it is an http:// URL)"
)




def register(sub: argparse._SubParsersAction) -> None:
    """Add this module\'s subcommand(s) to the `stoprace` parser."""
    p = sub.add_parser(
        "submit",
        help=COMMANDS["submit"],
        description=(
            "Submit SPEC.toml to a Ray cluster as a Ray Job whose entrypoint is `stoprace run SPEC --out OUT`. "
            "The spec and (unless --no-ship) the stoprace packages are uploaded with the job, so the cluster "
            "needs only Ray and stoprace's third-party dependencies (or --pip); a preflight job checks them first. Prints the job id; watch it with "
            "`stoprace status|logs JOB --address ...`. The job runs on the head node and keeps running if "
            "this command ends; results go to OUT as seen from the head node."
        ),
    )
    p.add_argument("spec", metavar="SPEC.toml", help="sweep spec (see examples/)")
    p.add_argument("--address", metavar="URL", help=_ADDRESS_HELP)
    p.add_argument(
        "--out",
        metavar="URI",
        help=(
            "results dir as seen from the head node: a path (on the head, or a shared mount), file:///..., "
            "s3://bucket/prefix, gs://... (default ~/stoprace-results/<sweep name> on the head node)"
        ),
    )
    p.add_argument("--wait", action="store_true", help="stream the job's output until it ends; exit 0 iff it SUCCEEDED")
    add_scheduling_options(p)
    p.add_argument(
        "--no-ship",
        action="store_true",
        help="do not upload the stoprace packages: the cluster's Python has stoprace installed",
    )
    p.add_argument(
        "--pip",
        action="store_true",
        help="also have Ray pip-install stoprace's dependencies for the job (slow; for clusters with Ray only)",
    )
    p.add_argument("--python", metavar="CMD",
                   help="the job's Python on the head node (default: the one Ray runs its workers with there; "
                        "with --pip, the job's virtualenv)")
    p.add_argument("--job-id", metavar="ID", help="submission id (default stoprace-<sweep name>-<8 hex digits>); must be new")
    p.set_defaults(func=submit_cmd)

    s = sub.add_parser(
        "status",
        help=COMMANDS["status"],
        description="Print a job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), or every job without JOB.",
    )
    s.add_argument("job", metavar="JOB", nargs="?", help="job id printed by `stoprace submit` (omit to list jobs)")
    s.add_argument("--address", metavar="URL", help=_ADDRESS_HELP)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=status_cmd)

    lg = sub.add_parser("logs", help=COMMANDS["logs"], description="Print a job's output (its driver's stdout and stderr).")
    lg.add_argument("job", metavar="JOB", help="job id printed by `stoprace submit`")
    lg.add_argument("--address", metavar="URL", help=_ADDRESS_HELP)
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    lg.set_defaults(func=logs_cmd)

    st = sub.add_parser(
        "stop",
        help=COMMANDS["stop"],
        description=(
            f"Stop a job: its driver gets SIGTERM and up to {STOP_GRACE_S} s to store every finished task and "
            "exit (then SIGKILL); its tasks end with it. "
            "Submitting the same spec with the same --out later resumes it."
        ),
    )
    st.add_argument("job", metavar="JOB", help="job id printed by `stoprace submit`")
    st.add_argument("--address", metavar="URL", help=_ADDRESS_HELP)
    st.add_argument("--wait", action="store_true", help="wait until the job has ended")
    st.set_defaults(func=stop_cmd)


def _cluster_errors(cmd):
    """`cluster.jobs.JobsError` (a plain Exception: cluster imports nothing of ours) as a ClusterError."""

    @functools.wraps(cmd)
    def wrapped(args: argparse.Namespace) -> int:
        from cluster.jobs import JobsError

        try:
            return cmd(args)
        except JobsError as e:
            raise ClusterError(str(e)) from None

    return wrapped


# ---- building the job ----------------------------------------------------------------


def pip_requirements() -> list[str]:
    """stoprace's runtime requirements (sweeps.nodes.requirements) without Ray: the cluster has its own."""
    from sweeps.nodes import requirements

    return [r for r in requirements() if not r.lower().startswith("ray")]


def entrypoint(
    spec_file: str,
    out: str,
    *,
    python: str = "python",
    max_in_flight: int | None = None,
    retries: int = 3,
    force: bool = False,
) -> str:
    """The job's shell command: a real `stoprace run`, as `PYTHON -m sweeps.cli run` (the code may be shipped,
    and no `stoprace` script need be on the head's PATH either way)."""
    # --no-ship: the job's runtime_env already ships the packages (or stoprace is installed).
    cmd = [*shlex.split(python), "-m", "sweeps.cli", "run", spec_file, "--out", out, "--no-progress", "--no-ship",
           "--retries", str(retries)]
    if max_in_flight is not None:
        cmd += ["--max-in-flight", str(max_in_flight)]
    if force:
        cmd.append("--force")
    return shlex.join(cmd)


PREFLIGHT_TIMEOUT_S = 120
"""How long the preflight job may take (Ray sets up the runtime_env first); with --pip, PIP_TIMEOUT_S."""
PIP_TIMEOUT_S = 1800


def job_python(client, args: argparse.Namespace) -> str:
    """The interpreter the job runs with: --python, else (with --pip) the job's virtualenv's `python`, else the
    one Ray runs its workers with on the head (not whatever `python` is first on the head's PATH)."""
    if args.python:
        return args.python
    if args.pip:
        return "python"  # Ray activates the job's pip virtualenv for the entrypoint
    found = client.head_python()
    if found is None:
        print("stoprace submit: the cluster's dashboard does not say which Python Ray runs on the head: trying "
              "`python` (--python CMD names it)", file=sys.stderr, flush=True)
    return shlex.quote(found) if found else "python"  # a path (may hold spaces) as a CMD


def preflight(client, job_id: str, python: str, runtime_env: dict, *, ship: bool, pip: bool) -> str:
    """Run a one-line check with the job's interpreter and runtime_env before the sweep's job (about a second
    once Ray has the packages); ClusterError (one line) if that interpreter cannot run the sweep."""
    from sweeps.nodes import preflight_entrypoint, preflight_verdict

    info, logs = client.run_to_end(
        preflight_entrypoint(python),
        runtime_env=runtime_env,
        submission_id=f"{job_id}-preflight",
        metadata={"stoprace_preflight": job_id},
        timeout=PIP_TIMEOUT_S if pip else PREFLIGHT_TIMEOUT_S,
    )
    if not info.succeeded and "runtime_env" in (info.message or "").lower():
        raise ClusterError(f"the cluster could not set up the job's runtime_env: {info.message[:300]}")
    return preflight_verdict(python, logs, ship=ship, exit_code=info.driver_exit_code)


def _run_error(logs: str) -> str | None:
    """The job's own one-line `stoprace run: error: ...` (bad input or a node problem), if it printed one."""
    mark = "stoprace run: error: "
    return next((ln[len(mark):].strip() for ln in reversed(logs.splitlines()) if ln.startswith(mark)), None)


@_cluster_errors
def submit_cmd(args: argparse.Namespace) -> int:
    """`stoprace submit`: send the sweep to a cluster as a Ray Job; prints its id."""
    from cluster.jobs import JobsClient, shipping_runtime_env
    from sweeps.guards import check_size
    from sweeps.nodes import package_dirs
    from sweeps.spec import load_spec

    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    spec = load_spec(args.spec, force=args.force)
    check_size(spec, force=args.force)  # refused here, not minutes later in the job
    out = args.out or DEFAULT_REMOTE_OUT.format(name=spec.name)
    client = JobsClient(args.address)
    job_id = args.job_id or f"stoprace-{spec.name}-{uuid.uuid4().hex[:8]}"
    spec_file = f"{spec.name}.toml"
    python = job_python(client, args)
    with tempfile.TemporaryDirectory(prefix="stoprace-submit-") as staging:
        # The canonical spec: same spec_hash as the file given, so --out resumes across submissions.
        (Path(staging) / spec_file).write_text(spec.to_toml(), encoding="utf-8")
        runtime_env = shipping_runtime_env(
            [] if args.no_ship else package_dirs(),
            working_dir=staging,
            pip=pip_requirements() if args.pip else None,
            # read by the job's supervisor on `stop` (it runs in the job's runtime_env)
            env_vars={"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)},
        )
        python = preflight(client, job_id, python, runtime_env, ship=not args.no_ship, pip=args.pip)
        cmd = entrypoint(spec_file, out, python=python, max_in_flight=args.max_in_flight, retries=args.retries,
                         force=args.force)
        job_id = client.submit(
            cmd,
            runtime_env=runtime_env,
            submission_id=job_id,
            metadata={"stoprace_sweep": spec.name, "stoprace_out": out, "stoprace_spec_hash": spec.spec_hash[:16]},
        )
    print(job_id, flush=True)
    addr = shlex.quote(client.address)
    print(
        f"stoprace submit: job {job_id}: {spec.name} ({spec.n_points} points) -> {out} on the cluster, "
        f"Python {python}\n"
        f"  watch: stoprace status {job_id} --address {addr}; stoprace logs {job_id} --address {addr} --follow",
        file=sys.stderr,
        flush=True,
    )
    if not args.wait:
        return 0
    try:
        info = client.follow(job_id, _write_out)
    except KeyboardInterrupt:
        print(f"stoprace submit: stopped waiting; job {job_id} keeps running (stoprace stop {job_id} --address {addr})", file=sys.stderr)
        return 130
    if not info.succeeded and info.driver_exit_code == 2:  # the job's `stoprace run` refused with one line
        why = _run_error(client.logs(job_id))
        if why:
            raise ClusterError(f"job {job_id} {info.status}: {why}")
    tail = f": {info.message}" if info.message and not info.succeeded else ""
    print(f"stoprace submit: job {job_id} {info.status}{tail}", file=sys.stderr)
    return 0 if info.succeeded else 1


# ---- watching ------------------------------------------------------------------------


def _write_out(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else "-"


def _as_dict(j) -> dict:
    return {
        "job_id": j.job_id,
        "status": j.status,
        "message": j.message,
        "entrypoint": j.entrypoint,
        "start_time": j.start_time,
        "end_time": j.end_time,
        "metadata": j.metadata,
    }


@_cluster_errors
def status_cmd(args: argparse.Namespace) -> int:
    """`stoprace status`: one job's state, or every job on the cluster."""
    from cluster.jobs import JobsClient

    client = JobsClient(args.address)
    if args.job is None:
        jobs = client.list()
        if args.json:
            print(json.dumps([_as_dict(j) for j in jobs], indent=1))
            return 0
        for j in jobs:
            what = j.metadata.get("stoprace_sweep") or j.entrypoint
            print(f"{j.job_id}\t{j.status}\t{_when(j.start_time)}\t{what[:80]}")
        return 0
    j = client.info(args.job)
    if args.json:
        print(json.dumps(_as_dict(j), indent=1))
        return 0
    print(f"{j.job_id}: {j.status}" + (f" ({j.message})" if j.message else ""))
    if j.metadata.get("stoprace_sweep"):
        print(f"  sweep:      {j.metadata['stoprace_sweep']} -> {j.metadata.get('stoprace_out', '?')}")
    print(f"  entrypoint: {j.entrypoint}")
    print(f"  started:    {_when(j.start_time)}")
    print(f"  ended:      {_when(j.end_time)}")
    return 0


@_cluster_errors
def logs_cmd(args: argparse.Namespace) -> int:
    """`stoprace logs`: a job's output, optionally followed until it ends."""
    from cluster.jobs import JobsClient

    client = JobsClient(args.address)
    if args.follow:
        try:
            client.follow(args.job, _write_out)
        except KeyboardInterrupt:
            return 130
        return 0
    _write_out(client.logs(args.job))
    return 0


@_cluster_errors
def stop_cmd(args: argparse.Namespace) -> int:
    """`stoprace stop`: stop a job (its driver keeps finished tasks)."""
    from cluster.jobs import JobsClient

    client = JobsClient(args.address)
    if client.stop(args.job):
        print(f"{args.job}: stop requested")
    else:
        print(f"{args.job}: already {client.info(args.job).status}")
    if args.wait:
        print(f"{args.job}: {client.wait(args.job).status}")
    return 0
