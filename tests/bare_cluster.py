"""A real Ray cluster on bare nodes: Ray and stoprace's third-party dependencies, not stoprace.

What README's cluster section promises the nodes need, built and started as a user would:

- `bare_venv()`: a virtualenv with exactly the `[project] dependencies` of pyproject.toml
  (Ray pinned to the driver's version: Ray refuses a driver of another version), and not
  stoprace. Building it takes minutes, so it is cached between runs under
  ~/.cache/stoprace-bare-venv/<key> (key: a hash of the dependency list, the Ray version and the
  interpreter) and reused while the key holds; pip's own cache makes a rebuild cheaper still.
- `BareCluster`: a head and a worker node started from that venv with `ray start --block`,
  each with its own free ports and its own --temp-dir (so nothing else on the machine joins
  it, and `ray.init()` elsewhere never finds it), stopped by pid (SIGTERM to each `ray start`,
  whose reaper takes the node's processes with it; never a machine-wide `ray stop`).

The nodes' environment is what a bare machine gives: no PYTHONPATH, no VIRTUAL_ENV, and a PATH
without this project's venv or the bare venv (the venv's `ray` is called by its full path, as
an init script would), so `python` on the head's PATH is some other interpreter. `stoprace
submit` must not depend on that (it did: `--python` defaulted to `python`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("STOPRACE_BARE_VENV_CACHE", Path.home() / ".cache" / "stoprace-bare-venv"))
BUILD_TIMEOUT_S = 1800


def dependencies() -> list[str]:
    """stoprace's runtime dependencies, as pyproject.toml lists them (no extras, not stoprace)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def _ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def venv_key(deps: list[str] | None = None) -> str:
    """What the cached venv depends on: the dependency list, the Ray pin and this interpreter."""
    what = {
        "deps": sorted(deps if deps is not None else dependencies()),
        "ray": _ray_version(),
        "python": sys.version,
        "base": getattr(sys, "_base_executable", sys.executable),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _is_venv_bin(path: str) -> bool:
    """A virtualenv's bin/ (any venv: a shell that activated another one before the tests must not
    hand it to the nodes, whose PATH's `python` has to be some interpreter without Ray)."""
    return (Path(path).parent / "pyvenv.cfg").is_file()


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a bare node: this one minus every trace of this project and its venvs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHON", "VIRTUAL_ENV"))}
    drop = {str(ROOT), str(CACHE), os.path.dirname(sys.executable)}
    env["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and not any(p.startswith(d) for d in drop) and not _is_venv_bin(p)
    )
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra or {})
    return env


def build_venv(where: Path, packages: list[str], *, constraints: list[str] = ()) -> None:
    """`python -m venv where` from this interpreter's base, then pip install `packages` there."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(where)], check=True, timeout=300, env=node_env())
    cmd = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages]
    if constraints:
        pins = where / "constraints.txt"
        pins.write_text("\n".join(constraints) + "\n")
        cmd += ["--constraint", str(pins)]
    subprocess.run(cmd, check=True, timeout=BUILD_TIMEOUT_S, env=node_env(), cwd=where)


def bare_venv() -> Path:
    """The cached bare-node venv (built now if missing; concurrent callers wait for one build)."""
    deps = dependencies()
    where = CACHE / venv_key(deps)
    ready = where / ".stoprace-ready"
    if ready.exists():
        return where
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{where.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return where
        shutil.rmtree(where, ignore_errors=True)  # a build that died half-way
        build_venv(where, deps, constraints=[f"ray=={_ray_version()}"])
        probe = subprocess.run([str(where / "bin" / "python"), "-c", "import sweeps"], cwd=where,
                               env=node_env(), capture_output=True, text=True)
        assert probe.returncode != 0, f"{where} can import stoprace's packages: not a bare node"
        ready.write_text(json.dumps({"deps": deps, "ray": _ray_version()}))
    return where


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    """Every port a node opens, chosen free now (Ray's defaults, e.g. 52365, may be taken here)."""
    opts = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
    args = []
    for o in opts:
        args += [o, str(free_port())]
    return args + ["--min-worker-port", "0", "--max-worker-port", "0"]  # 0: workers take any free port


def _top_name(entry: str) -> str:
    """The import/distribution name a site-packages entry belongs to (numpy, numpy-2.4.6.dist-info, numpy.libs)."""
    base = entry.split("-")[0] if entry.endswith((".dist-info", ".egg-info")) else entry
    for suffix in (".libs", ".py", ".pth"):
        base = base.removesuffix(suffix)
    return base.lower().replace("-", "_")


def overlay_venv(base: Path, *, drop: tuple[str, ...] = (), pins: tuple[str, ...] = ()) -> Path:
    """A venv with `base`'s packages (symlinked: seconds, not minutes) except those named in `drop` (import
    names, e.g. "pyarrow"), plus `pins` (e.g. "numpy==2.3.5") installed without their dependencies: a node
    with a deliberately missing or other-version package. Cached beside `base` like it."""
    key = hashlib.sha256(json.dumps([base.name, sorted(drop), sorted(pins)]).encode()).hexdigest()[:12]
    where = CACHE / f"{base.name}-overlay-{key}"
    ready = where / ".stoprace-ready"
    if ready.exists():
        return where
    with open(CACHE / f"{where.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return where
        shutil.rmtree(where, ignore_errors=True)
        _build_overlay(base, where, drop, pins)
        ready.write_text(json.dumps({"base": str(base), "drop": drop, "pins": pins}))
    return where


def _build_overlay(base: Path, where: Path, drop: tuple[str, ...], pins: tuple[str, ...]) -> None:
    base_exe = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_exe, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120, env=node_env())
    (src,) = (base / "lib").glob("python3.*/site-packages")
    (dst,) = (where / "lib").glob("python3.*/site-packages")
    gone = {d.lower() for d in drop} | {_top_name(re.split(r"[=<>!~\[]", p)[0]) for p in pins}
    for entry in src.iterdir():
        if _top_name(entry.name) not in gone and not (dst / entry.name).exists():
            (dst / entry.name).symlink_to(entry)
    if pins:
        subprocess.run([str(base / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(dst), *pins], check=True, timeout=BUILD_TIMEOUT_S, env=node_env(), cwd=where)
    script = (base / "bin" / "ray").read_text().splitlines(keepends=True)
    (where / "bin" / "ray").write_text(f"#!{where / 'bin' / 'python'}\n" + "".join(script[1:]))
    (where / "bin" / "ray").chmod(0o755)


class BareCluster:
    """A head (from `venv`) and worker nodes (from `workers`, venvs too), 1 CPU each; `gcs` and `dashboard`."""

    def __init__(self, venv: Path, tmp: Path, *, workers: tuple[Path, ...] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.venv, self.tmp = venv, tmp
        self.port, self.dash = free_port(), free_port()
        self.gcs = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dash}"
        self.procs: list[subprocess.Popen] = []
        self.env = node_env(env)
        self.cwd = tmp / "cwd"  # not the repo: a node must not import it from its working directory
        self.cwd.mkdir(parents=True, exist_ok=True)
        # Ray's temp dirs: short paths (its sockets live there and AF_UNIX paths are at most 107 bytes)
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="srb-"))
        try:
            self.head = self._start(venv, "head", [
                "--head", "--port", str(self.port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dash),
                "--include-dashboard", "true", "--ray-client-server-port", str(free_port())])
            self._wait_for(lambda: self._listening(self.dash), 120, "the head's dashboard")
            for w in (venv,) if workers is None else workers:
                self.add_worker(w)
        except BaseException:
            self.stop()
            raise

    def add_worker(self, venv: Path) -> subprocess.Popen:
        """Start a worker node from `venv` and wait until the head counts it."""
        proc = self._start(venv, f"worker{len(self.procs)}", ["--address", self.gcs])
        n = len(self.procs)  # every node started here and not stopped
        self._wait_for(lambda: self.alive_nodes() == n, 120, f"{n} nodes")
        return proc

    def stop_node(self, proc: subprocess.Popen) -> None:
        """Stop one node (its `ray start --block`, whose reaper takes the node's processes with it)."""
        self._stop(proc)
        self.procs.remove(proc)
        n = len(self.procs)
        self._wait_for(lambda: self.alive_nodes() == n, 120, f"{n} nodes")

    def _start(self, venv: Path, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        cmd = [str(venv / "bin" / "ray"), "start", "--block", "--num-cpus", "1",
               "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.ray_tmp / name),
               "--disable-usage-stats", *_node_ports(), *args]
        proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc
    @staticmethod
    def _listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def _wait_for(self, cond, timeout: float, what: str) -> None:
        t0 = time.monotonic()
        while not cond():
            dead = [p for p in self.procs if p.poll() is not None and p.returncode != -signal.SIGTERM]
            if dead:
                raise AssertionError(f"a bare node's `ray start` ended before {what}: {self.logs()[-3000:]}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"timed out waiting for {what}: {self.logs()[-3000:]}")
            time.sleep(0.5)

    def alive_nodes(self) -> int:
        """How many nodes the cluster's GCS counts alive (Ray's state API through the dashboard; 0 while it
        cannot answer). The dashboard's node summary lags behind joins and departures: not used here."""
        from ray.util.state import list_nodes

        try:
            return len(list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], timeout=10,
                                  raise_on_missing_output=False))
        except Exception:
            return 0

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    @staticmethod
    def _stop(p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the session it was started in: only that node's processes
        except ProcessLookupError:
            pass
        p.wait(timeout=30)

    def stop(self) -> None:
        """Stop every node, workers first (SIGTERM to each `ray start --block`, SIGKILL of its session if it lingers)."""
        for p in reversed(self.procs):
            self._stop(p)
        self.procs.clear()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
