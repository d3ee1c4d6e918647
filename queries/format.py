"""Query results out: aligned terminal tables, CSV, JSON and Parquet, files written atomically.

Terminal tables show units in the headers (a column `t_p99_us` is headed
`t_p99 (µs)`), probabilities with 3 significant digits, other floats with 4, and
lists shortened; CSV/JSON/Parquet keep the raw column names and full values.

pyarrow, rich and DuckDB are imported where a result is written, not here: `stoprace query
--help` reads FORMATS without loading them.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from core.histogram import TOP_EDGE_US

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FORMATS", "header", "format_cell", "render_table", "to_csv_bytes", "to_json_bytes", "to_json_bytes_within",
           "atomic_write", "write_result", "check_output"]

FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")
_UNITS = (("_us", "µs"), ("_s", "s"))
_PROB_SUFFIXES = ("_lo", "_hi")


def header(name: str) -> str:
    """Column header with its unit: 't_p99_us' -> 't_p99 (µs)', 'wall_s' -> 'wall (s)'."""
    for suffix, unit in _UNITS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return f"{name[: -len(suffix)]} ({unit})"
    return name


def _is_prob(name: str) -> bool:
    return name.startswith("p_") or name.endswith(_PROB_SUFFIXES) or "ratio" in name or name.endswith("_fraction")


_INTEGRAL_BELOW = 10**7
"""A float column whose values are all whole numbers below this is shown as integers."""


def integral_column(values: Sequence[Any]) -> bool:
    """True if every finite float among `values` is a whole number below _INTEGRAL_BELOW in size.

    One format per column: 1011004.0 is shown as 1011004 only if the whole column is integral,
    so it never stands beside 1.011e6 for 1011004.5 in the same column.
    """
    return all(
        not isinstance(v, float) or not math.isfinite(v) or (v.is_integer() and abs(v) < _INTEGRAL_BELOW)
        for v in values
    )


def _num(v: float, digits: int, integral: bool = True) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if integral and float(v).is_integer() and abs(v) < _INTEGRAL_BELOW:
        return str(int(v))
    s = f"{v:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def format_cell(name: str, v: Any, integral: bool = True) -> str:
    """One value as shown in a terminal table (`integral`: its column is integral_column).

    A stop-time quantile (t_p50_us, ...) of +inf lies in the histogram's open top bin
    (core.histogram.quantile) and is shown as ">= 8.66e7".
    """
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v == math.inf and name.startswith("t_p") and name.endswith("_us"):
        return f">= {_num(TOP_EDGE_US, 3)}"
    if isinstance(v, float):
        return _num(v, 3 if _is_prob(name) else 4, integral)
    if isinstance(v, (list, tuple)):
        s = "[" + ", ".join(format_cell(name, x) for x in v[:8]) + (", …" if len(v) > 8 else "") + "]"
        return s if len(v) <= 8 else s + f" ({len(v)})"
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def _numeric(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def render_table(table: pa.Table, *, max_rows: int | None = 100, title: str | None = None,
                 notes: Sequence[str] = (), total_known: bool = True) -> str:
    """The table as aligned text (rich, no colour), numbers right-aligned; at most max_rows rows.

    total_known=False: the table was fetched with LIMIT max_rows + 1, so only
    "more rows" can be said, not how many.
    """
    import pyarrow as pa
    from rich import box
    from rich.console import Console
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", show_edge=False, pad_edge=False,
              highlight=False)
    names = table.column_names
    for name, typ in zip(names, table.schema.types):
        t.add_column(header(name), justify="right" if _numeric(typ) else "left", no_wrap=True)
    shown = table if not max_rows or table.num_rows <= max_rows else table.slice(0, max_rows)
    integral = {n: integral_column(shown.column(n).to_pylist()) if pa.types.is_floating(typ) else True
                for n, typ in zip(names, shown.schema.types)}
    for row in shown.to_pylist():
        t.add_row(*(format_cell(n, row[n], integral[n]) for n in names))
    buf = io.StringIO()
    console = Console(file=buf, width=100_000, no_color=True, highlight=False, emoji=False, markup=False,
                      force_terminal=False, soft_wrap=False)
    console.print(t)
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    if shown.num_rows < table.num_rows:
        more = f"{table.num_rows - shown.num_rows} more rows of {table.num_rows}" if total_known else "more rows"
        lines.append(f"… {more} not shown (--max-rows 0 shows all; --format csv|json|parquet writes everything)")
    elif table.num_rows == 0:
        lines.append("(no rows)")
    lines.extend(notes)
    return "\n".join(lines) + "\n"


def _flatten_nested(table: pa.Table) -> pa.Table:
    """List/struct/map columns as JSON text (CSV has no nested types)."""
    import pyarrow as pa

    cols = []
    for col in table.columns:
        t = col.type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_struct(t) or pa.types.is_map(t) \
                or pa.types.is_fixed_size_list(t):
            col = pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def to_csv_bytes(table: pa.Table) -> bytes:
    import pyarrow.csv as pacsv

    buf = io.BytesIO()
    pacsv.write_csv(_flatten_nested(table), buf)
    return buf.getvalue()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _json_rows(table: pa.Table) -> list[str]:
    return [json.dumps(_jsonable(r), default=str, allow_nan=False) for r in table.to_pylist()]


def _json_array(rows: Sequence[str]) -> bytes:
    return ("[\n" + ",\n".join(rows) + ("\n" if rows else "") + "]\n").encode()


def to_json_bytes(table: pa.Table) -> bytes:
    """A JSON array of one object per row (NaN/inf as null), one row per line."""
    return _json_array(_json_rows(table))


def to_json_bytes_within(table: pa.Table, max_bytes: int) -> tuple[bytes, int]:
    """to_json_bytes of the first rows whose array fits in `max_bytes` (at least "[]"); (bytes, rows kept)."""
    rows = _json_rows(table)
    size, kept = len(_json_array([])), 0
    for r in rows:  # json.dumps escapes non-ASCII: characters are bytes
        size += len(r) + (2 if kept else 1)
        if size > max_bytes:
            break
        kept += 1
    return _json_array(rows[:kept]), kept


def atomic_write(path: str | Path, data: bytes | None = None, *, writer=None) -> None:
    """Write bytes (or call writer(tmp_path)) to `path` atomically (queries.resultset.storage.atomic_write_file).

    The file gets the mode any new file of this process gets (0666 less the umask), not
    mkstemp's 0600. A path that cannot be written (permissions, a full disk, ...) is a
    QueryError naming it, and leaves no temporary file.
    """
    from .db import QueryError
    from .resultset.storage import atomic_write_file

    try:
        atomic_write_file(path, data, writer=writer)
    except OSError as e:
        raise QueryError(f"cannot write '{path}': {e.strerror or e}") from None


def check_output(fmt: str, out: str | Path | None) -> None:
    """Refuse a bad format/output combination before any work is done."""
    from .db import QueryError

    if fmt not in FORMATS:
        raise QueryError(f"unknown format '{fmt}': one of {', '.join(FORMATS)}")
    if fmt == "parquet" and out is None:
        raise QueryError("--format parquet needs -o FILE")
    if out is not None:
        parent = Path(out).parent
        if not parent.is_dir():
            raise QueryError(f"cannot write '{out}': directory '{parent}' does not exist")
        if Path(out).is_dir():
            raise QueryError(f"cannot write '{out}': it is a directory")


def write_result(table: pa.Table, fmt: str = "table", out: str | Path | None = None, *,
                 stream: TextIO | None = None, max_rows: int | None = 100, title: str | None = None,
                 notes: Sequence[str] = (), total_known: bool = True) -> None:
    """Write a result in one of FORMATS to `out` (atomically) or to `stream` (default stdout)."""
    check_output(fmt, out)
    stream = stream if stream is not None else sys.stdout
    if fmt == "parquet":
        import pyarrow.parquet as pq

        atomic_write(out, writer=lambda tmp: pq.write_table(table, tmp))  # type: ignore[arg-type]
        return
    if fmt == "table":
        data = render_table(table, max_rows=None if out is not None else max_rows, title=title,
                            notes=notes, total_known=total_known).encode()
    elif fmt == "csv":
        data = to_csv_bytes(table)
    else:
        data = to_json_bytes(table)
    if out is not None:
        atomic_write(out, data)
    else:
        stream.write(data.decode())
        stream.flush()
