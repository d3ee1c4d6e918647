"""Arrow schemas of the result store (SCHEMA.md): `points` rows per (point, shard), `events` rows per bad trial.

Parameter columns are derived from core.params so the store and the model cannot
drift apart.
"""

from __future__ import annotations

import pyarrow as pa

from core.estimators import ESTIMATE_COLUMNS
from core.histogram import N_BINS
from core.outcomes import OUTCOMES
from core.params import PARAM_SPECS

__all__ = ["PARAM_TYPES", "POINTS_SCHEMA", "EVENTS_SCHEMA", "N_BINS"]


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
        # the sweep's estimator and, per shard, its estimate of p_race / p_bad with the variance of
        # that estimate (naive: k/n and s^2/n of the 0/1 outcomes; cmc: core.cmc); shards merge exactly
        pa.field("estimator", pa.string()),
    ]
    + [pa.field(c, pa.float64()) for c in ESTIMATE_COLUMNS]  # core.estimators decides them
    + [
        pa.field("preflush_sum_us", pa.float64()),  # early_flush only: sum over trials of preflush_us
        pa.field("preflush_max_us", pa.float64()),
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
