"""The result set's Arrow schemas live in queries.resultset.schema (the format's one home); re-exported here."""

from queries.resultset.schema import EVENTS_SCHEMA, N_BINS, PARAM_TYPES, POINTS_SCHEMA

__all__ = ["PARAM_TYPES", "POINTS_SCHEMA", "EVENTS_SCHEMA", "N_BINS"]
