"""stoprace queries: DuckDB views over result directories, named SQL, capacity tables, plots, replay.

`queries.connect(dir, ...)` opens result directories as DuckDB views.

Importing this package loads no DuckDB: `connect` and `QueryError` are looked up on first use
(module `__getattr__`). A Ray worker imports `queries.resultset` (the result-set format) through
this package and must not pay for, or need, the query layer (issue 20).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.errors import StopraceError

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from queries.db import QueryError, connect

__all__ = ["QueryError", "StopraceError", "connect"]

_LAZY = {"QueryError": "queries.db", "connect": "queries.db"}
"""Public names defined in a module that imports DuckDB: imported when first asked for."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'queries' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
