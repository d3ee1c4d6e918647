"""Arrow schemas of a result set (SCHEMA.md): `points` rows per (point, shard), `events` rows per bad trial.

Parameter columns are derived from core.params so the store and the model cannot
drift apart. The writer conforms every table to these schemas (``conform``); readers
require ``REQUIRED_POINTS_COLUMNS`` (what every release has written) and read newer
optional columns where present.
"""

from __future__ import annotations

import pyarrow as pa

from core.histogram import N_BINS
from core.outcomes import OUTCOMES
from core.params import FIRST_RELEASE_PARAMS, PARAM_SPECS
from queries.resultset.errors import StoreError

__all__ = ["PARAM_TYPES", "POINTS_SCHEMA", "EVENTS_SCHEMA", "N_BINS", "SCHEMAS", "REQUIRED_POINTS_COLUMNS", "conform"]


PARAM_TYPES: dict[str, pa.DataType] = {s.name: pa.type_for_alias(s.arrow) for s in PARAM_SPECS}
"""Column type of every model parameter, from core.params (the one place types are decided)."""

POINTS_SCHEMA = pa.schema(
    [pa.field("sweep", pa.string()), pa.field("point_id", pa.string()), pa.field("shard", pa.int32())]
    + [pa.field(n, t) for n, t in PARAM_TYPES.items()]
    + [pa.field("trials", pa.int64())]
    + [pa.field(o, pa.int64()) for o in OUTCOMES]
    + [
        pa.field("t_done_sum_us", pa.float64()),
        pa.field("t_done_max_us", pa.float64()),
        pa.field("t_done_hist", pa.list_(pa.int64())),
        # the sweep's estimator ("naive", "cmc", "late", or "late->naive" for a late sweep's point
        # that ran naive) and, per shard, its estimate of p_race / p_bad with the variance of that
        # estimate (naive and late: k/n and s^2/n of the 0/1 outcomes; cmc: core.estimators.cmc.walk);
        # shards merge exactly
        pa.field("estimator", pa.string()),
        pa.field("p_race_est", pa.float64()),
        pa.field("p_race_var", pa.float64()),
        pa.field("p_bad_est", pa.float64()),
        pa.field("p_bad_var", pa.float64()),
        pa.field("preflush_sum_us", pa.float64()),  # early_flush only: sum over trials of preflush_us
        pa.field("preflush_max_us", pa.float64()),
        pa.field("preflush_hist", pa.list_(pa.int64())),  # the t_done_hist bins over preflush_us (model_rev 2)
        pa.field("seed", pa.uint64()),
        pa.field("wall_s", pa.float64()),
    ]
)

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("sweep", pa.string()),
        pa.field("point_id", pa.string()),
        pa.field("shard", pa.int32()),
        pa.field("trial", pa.int64()),
        pa.field("outcome", pa.string()),
        pa.field("t_done_us", pa.float64()),
        pa.field("nmi_sent", pa.int32()),
        pa.field("racers", pa.int32()),
        pa.field("overlap_us", pa.float64()),
        pa.field("first_racer_cpu", pa.int32()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {"points": POINTS_SCHEMA, "events": EVENTS_SCHEMA}
"""Each table of a result set by its directory name (queries.resultset.layout.TABLES)."""

REQUIRED_POINTS_COLUMNS: tuple[str, ...] = (
    "sweep", "point_id", "shard", *FIRST_RELEASE_PARAMS, "trials", *OUTCOMES,
    "t_done_sum_us", "t_done_max_us", "t_done_hist", "seed", "wall_s",
)  # wall_s stays in `points`; `outcomes` leaves it out, so that it is the same bytes run to run
"""The points columns every release has written (later parameters read as their neutral value, and the
estimator and preflush columns came later)."""


def conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """Select the schema's columns in order and cast; StoreError (one line) if impossible."""
    if not isinstance(table, pa.Table):
        raise StoreError(f"{what}: expected a pyarrow.Table, got {type(table).__name__}")
    if table.schema.equals(schema):
        return table
    names = set(table.column_names)
    missing = [n for n in schema.names if n not in names]
    if missing:
        raise StoreError(f"{what}: missing column(s) {', '.join(missing)}")
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise StoreError(f"{what}: unexpected column(s) {', '.join(extra)}")
    if len(set(table.column_names)) != len(table.column_names):
        raise StoreError(f"{what}: duplicate column names")
    t = table.select(schema.names)
    if t.schema.equals(schema):
        return t
    try:
        return t.cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise StoreError(f"{what}: does not match the store schema: {' '.join(str(e).split())}") from None
