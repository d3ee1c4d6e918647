"""The one root of every error stoprace reports to a user (bad spec, bad value, bad path, bad SQL).

`stoprace` prints a `StopraceError` as one line and exits 2; anything else is a bug and
keeps its traceback (exit 1). Each package subclasses it for its own kind of bad input
(SpecError, StoreError, QueryError, UsageError); `cluster` may import nothing of ours,
so its JobsError is translated at the `sweeps` boundary.
"""

from __future__ import annotations


class StopraceError(Exception):
    """Bad input from the user: printed as one line, exit code 2, nothing written or lost."""


class ParamError(StopraceError):
    """A bad model parameter (unknown name, value outside its domain): one line naming it.

    ``name`` and ``value`` say which parameter and value (None when no single one is at fault),
    so a caller can name it its own way (the CLI says ``--n-cpus 1``, not ``n_cpus = 1``).
    """

    def __init__(self, message: str, name: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.name = name
        self.value = value
