"""The result-set format: the one definition every writer and reader of stoprace results uses.

- ``schema``: the Arrow schemas of ``points`` and ``events`` (from core.params), ``conform``
- ``layout``: every file and directory name of a set
- ``manifest``: the pydantic manifest (the commit point) and its versioned migrations
- ``storage``: local and pyarrow-filesystem backends, the only atomic writer
- ``lock``: one writer per set
- ``reader``: ``ResultSet`` (manifest snapshot, integrity check, Arrow datasets)
- ``writer``: ``SetWriter`` (segments, commits, merges, garbage) and ``compact``

It imports pyarrow, pydantic and core only (no Ray, no DuckDB), so every reader can use it;
the names below are imported on first use, so ``layout`` alone loads none of them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from queries.resultset.errors import StoreError
    from queries.resultset.manifest import FORMAT, FORMAT_VERSION, Manifest
    from queries.resultset.ranges import RangeSet
    from queries.resultset.reader import Integrity, ResultSet
    from queries.resultset.storage import atomic_write_file, is_uri, locate

__all__ = ["StoreError", "FORMAT", "FORMAT_VERSION", "Manifest", "RangeSet", "ResultSet", "Integrity",
           "atomic_write_file", "is_uri", "locate"]

_WHERE = {
    "StoreError": "errors", "FORMAT": "manifest", "FORMAT_VERSION": "manifest", "Manifest": "manifest",
    "RangeSet": "ranges", "ResultSet": "reader", "Integrity": "reader",
    "atomic_write_file": "storage", "is_uri": "storage", "locate": "storage",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"queries.resultset.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'queries.resultset' has no attribute '{name}'")
