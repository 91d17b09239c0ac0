-- The time a report stands for (tracker.core.reduce.report_time, its Python twin): the vendor's
-- event time, unless absent, or one no report can mean: more than 10 minutes ahead of its
-- receipt (a vendor's clock fast, a zone misread) or more than 400 days before it (Go's zero
-- time, 0001-01-01, made a message's delivery time the year 1 for good: the earliest is kept).
-- Then the time it was received. The report keeps the vendor's time in event_at.
CREATE FUNCTION tracker.report_time(event_at timestamptz, received_at timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN event_at BETWEEN received_at - interval '400 days'
                                  AND received_at + interval '10 minutes'
                THEN event_at ELSE received_at END
$$;
