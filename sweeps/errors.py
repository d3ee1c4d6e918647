"""The errors `sweeps` raises for bad input that no narrower module owns (all StopraceErrors).

SpecError (sweeps.spec) and StoreError (queries.resultset.errors) live beside the code they check;
these two are for the command line and for the cluster boundary.
"""

from __future__ import annotations

from core.errors import StopraceError

__all__ = ["UsageError", "ClusterError"]


class UsageError(StopraceError):
    """Bad command-line input not covered by a package's own error: one line, exit code 2."""


class ClusterError(StopraceError):
    """The cluster cannot be used as asked (address, --workers with a cluster, unreachable head,
    auth, a Ray Jobs problem): one line. `cluster` raises plain exceptions, since it imports
    nothing of ours; `sweeps` turns the ones a user causes into this."""
