"""stoprace queries: DuckDB views over result directories, named SQL, capacity tables, plots, replay.

`queries.connect(dir, ...)` opens result directories as DuckDB views.
"""

from core.errors import StopraceError
from queries.db import QueryError, connect

__all__ = ["QueryError", "StopraceError", "connect"]
