"""A node's Python environment as the reason a task or a connection failed, in words a user can act on.

Cluster nodes need the driver's Ray (and Python), the third-party packages the task imports
and, unless shipped as runtime_env py_modules, the task's own code. When one is missing or
different, Ray reports it as a traceback from deep in its deserializer (``RaySystemError:
No module named 'X'``), or as a runtime_env setup failure, or (Ray or Python of another
version) a multi-line ``Version mismatch`` from ``ray.init``. ``node_problem`` recognises
these in an exception and returns a ``NodeProblem`` (what is wrong, on which node); the caller,
who knows how the run was set up (what it shipped, which options exist), words the fix.

Packages whose version changes results rather than breaking imports (NumPy's random streams
and arithmetic, pyarrow's tables) are checked by ``SameVersions``: it wraps the task function,
and on the first call in each worker process compares that process's versions with the ones the
driver recorded, raising ``VersionMismatch`` before the task computes anything.

Imports only the standard library and Ray, like the rest of ``cluster``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

__all__ = ["NodeProblem", "SameVersions", "VersionMismatch", "describe_versions", "installed_versions", "node_problem"]

T = TypeVar("T")
R = TypeVar("R")

_MISSING = re.compile(r"No module named '([^']+)'")
_RAY_MISMATCH = re.compile(
    r"Version mismatch: The cluster was started with: Ray: (\S+) Python: (\S+) "
    r"This process on (.*?) was started with: Ray: (\S+) Python: (\S+)"
)


def installed_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each distribution in `names` in this process (None: not installed)."""
    found: dict[str, str | None] = {}
    for n in names:
        try:
            found[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            found[n] = None
    return found


class VersionMismatch(Exception):
    """A worker whose packages differ from the driver's (raised on the worker, re-raised by ray.get)."""

    def __init__(self, node: str, theirs: dict[str, str | None], ours: dict[str, str | None]) -> None:
        super().__init__(node, theirs, ours)
        self.node, self.theirs, self.ours = node, theirs, ours

    def __str__(self) -> str:
        return f"node {self.node} has {_versions(self.theirs)}, the driver {_versions(self.ours)}"


def _versions(v: Mapping[str, str | None]) -> str:
    return ", ".join(f"{k} {x or '(not installed)'}" for k, x in v.items())


_checked: dict[tuple[tuple[str, str | None], ...], None] = {}
"""Version sets this worker process has already matched (the check runs once per process)."""


class SameVersions(Generic[T, R]):
    """``fn`` that first checks (once per worker process) that ``versions`` are what is installed.

    Picklable when ``fn`` is (a top-level function or a functools.partial of one); keeps
    ``fn``'s name so Ray's task names and logs stay the caller's.
    """

    def __init__(self, fn: Callable[[T], R], versions: Mapping[str, str | None]) -> None:
        self.fn = fn
        self.versions = dict(versions)
        self._key = tuple(sorted(self.versions.items()))
        self.__name__ = str(getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "task"))

    def __call__(self, task: T) -> R:
        if self._key not in _checked:
            mine = installed_versions(tuple(self.versions))
            if mine != self.versions:
                raise VersionMismatch(_this_node(), mine, self.versions)
            _checked[self._key] = None
        return self.fn(task)


def _this_node() -> str:
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:  # not in a Ray worker (tests call the wrapper directly)
        import socket

        return socket.gethostname()


@dataclass(frozen=True)
class NodeProblem:
    """Why a node could not run the task: ``kind`` is one of

    - ``"missing"``: ``module`` cannot be imported there (``module`` is the dotted name Python named);
    - ``"versions"``: packages differ from the driver's (``theirs`` vs ``ours``);
    - ``"ray"``: the cluster runs another Ray or Python than the driver (``theirs``/``ours``: {"ray", "python"});
    - ``"runtime_env"``: Ray could not set up the runtime_env there (``detail``: Ray's first line).
    """

    kind: str
    node: str | None = None
    module: str | None = None
    theirs: Mapping[str, str | None] | None = None
    ours: Mapping[str, str | None] | None = None
    detail: str = ""

    @property
    def top_module(self) -> str | None:
        """The top-level package of a missing module (what a user installs or ships)."""
        return self.module.split(".")[0] if self.module else None


def _chain(e: BaseException) -> list[BaseException]:
    seen, out = set(), []
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        nxt = getattr(cur, "cause", None)  # RayTaskError keeps the worker's exception here
        cur = nxt if isinstance(nxt, BaseException) and id(nxt) not in seen else (cur.__cause__ or cur.__context__)
    return out


def node_problem(e: BaseException) -> NodeProblem | None:
    """The environment problem behind a failed task or ``ray.init`` (None: not an environment problem)."""
    chain = _chain(e)
    ips = (getattr(x, "ip", None) for x in chain)  # RayTaskError.ip: the node the task ran on
    node = next((str(ip) for ip in ips if ip), None)
    for x in chain:
        if isinstance(x, VersionMismatch):
            return NodeProblem("versions", node=x.node or node, theirs=x.theirs, ours=x.ours)
    from ray.exceptions import RayError, RuntimeEnvSetupError

    text = " ".join(" ".join(str(x).split()) for x in chain)
    m = _RAY_MISMATCH.search(text)
    if m:  # ray.init's refusal (a RuntimeError, not a RayError)
        return NodeProblem("ray", theirs={"ray": m[1], "python": m[2]}, ours={"ray": m[4], "python": m[5]})
    if not any(isinstance(x, RayError) for x in chain):
        return None  # raised here in the driver, not reported by a worker: not a node's environment
    for x in chain:
        if isinstance(x, RuntimeEnvSetupError):
            return NodeProblem("runtime_env", node=node, detail=" ".join(str(x).split())[:300])
    for x in chain:
        if isinstance(x, ModuleNotFoundError) and x.name:
            return NodeProblem("missing", node=node, module=x.name)
    m = _MISSING.search(text)  # Ray's RaySystemError from deserializing the task carries the text only
    if m:
        return NodeProblem("missing", node=node, module=m[1])
    return None


def describe_versions(v: Mapping[str, Any]) -> str:
    """``numpy 2.3.5, pyarrow 25.0.1`` for a version mapping."""
    return _versions(v)
