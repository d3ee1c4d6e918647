"""stoprace queries: DuckDB views over result directories, named SQL, capacity tables, plots, replay.

The Python API (the same functions `stoprace query`, `capacity` and `replay` call):

    con = queries.connect("results/tdx-kexec-small")       # read-only DuckDB views
    queries.run_sql(con, "SELECT * FROM outcomes")          # -> pyarrow.Table
    queries.named_answer(con, "hang_conditions")            # .table, .partial, .warnings
    queries.capacity_answer(con, 1e-6, where="wait = 1")    # refused on an incomplete set

`queries.capacity` and `queries.replay` are modules (their functions of the same name: the
capacity table without the complete-set rule, and one trial's timeline). Names are imported on
first use (PEP 562), so `import queries.resultset.layout` (the engine's
writer uses the format subpackage) loads neither DuckDB nor pyarrow.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from core.errors import StopraceError

if TYPE_CHECKING:
    from queries.answers import Answer, CapacityAnswer, capacity_answer, named_answer, sql_answer
    from queries.capacity import Capacity
    from queries.db import QueryError, connect
    from queries.named import list_named, run_named, run_sql
    from queries.replay import Replay

__all__ = [
    "Answer",
    "Capacity",
    "CapacityAnswer",
    "QueryError",
    "Replay",
    "StopraceError",
    "capacity_answer",
    "connect",
    "list_named",
    "named_answer",
    "run_named",
    "run_sql",
    "sql_answer",
]

_WHERE = {
    "Answer": "queries.answers", "CapacityAnswer": "queries.answers", "capacity_answer": "queries.answers",
    "named_answer": "queries.answers", "sql_answer": "queries.answers",
    "Capacity": "queries.capacity",
    "QueryError": "queries.db", "connect": "queries.db",
    "list_named": "queries.named", "run_named": "queries.named", "run_sql": "queries.named",
    "Replay": "queries.replay",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'queries' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
