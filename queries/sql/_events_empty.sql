-- internal: the events view when no task had a race, hang or timeout trial (columns of sweeps.schema.EVENTS_SCHEMA)
SELECT
    NULL::VARCHAR AS sweep,
    NULL::VARCHAR AS point_id,
    NULL::INTEGER AS shard,
    NULL::BIGINT AS trial,
    NULL::VARCHAR AS outcome,
    NULL::DOUBLE AS t_done_us,
    NULL::INTEGER AS nmi_sent,
    NULL::INTEGER AS racers,
    NULL::DOUBLE AS overlap_us,
    NULL::INTEGER AS first_racer_cpu
WHERE false
