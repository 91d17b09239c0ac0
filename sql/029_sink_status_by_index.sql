-- tracker.sink_status read every delivery row of a sink, dead letters and their bodies included,
-- with a sequential scan: dead letters are kept for ever by default (sink_dead_letters_days = 0),
-- and every daemon reads the view every 10 s for its lag gauge. At 2,000,000 dead letters (2.2 GB)
-- one read took 555 ms. Pending deliveries and dead letters are now counted apart, each through
-- its partial index (sink_deliveries_due, sink_deliveries_dead: index-only where the pages are
-- all-visible, as dead letters' soon are): 109 ms at 2,000,000. The columns and their meaning
-- are unchanged. The lag gauge reads only the columns it needs, and the planner then leaves the
-- dead letters' count out: 0.3 ms.
CREATE OR REPLACE VIEW tracker.sink_status AS
SELECT s.name AS sink,
       s.kind,
       coalesce(c.acked_pos, 0) AS position,
       greatest(p.last_pos - coalesce(c.acked_pos, 0), 0) + u.unpublished + coalesce(d.pending, 0)
           AS events_behind,  -- committed events not taken yet (numbered or not) and pending ones
       coalesce(d.pending, 0) AS pending,
       coalesce(dl.dead, 0) AS dead_letters,
       now() - least(d.oldest_pending, n.recorded_at, u.oldest) AS oldest_undelivered_age,
       s.last_success_at,
       s.last_error,
       s.last_error_at,
       s.disabled_at IS NOT NULL AS disabled,
       s.disabled_at,
       s.disabled_reason,
       CASE WHEN s.paused_until > now() THEN s.paused_until END AS paused_until,
       s.configured_at
FROM tracker.sinks s
CROSS JOIN tracker.event_publisher p
CROSS JOIN (SELECT count(*) AS unpublished, min(recorded_at) AS oldest
            FROM tracker.transitions WHERE pos IS NULL) u
LEFT JOIN tracker.consumers c ON c.consumer = s.consumer
LEFT JOIN LATERAL (
    SELECT count(*) AS pending, min(x.recorded_at) AS oldest_pending
    FROM tracker.sink_deliveries x WHERE x.sink = s.name AND x.status = 'pending'
) d ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS dead
    FROM tracker.sink_deliveries x WHERE x.sink = s.name AND x.status = 'dead'
) dl ON true
LEFT JOIN LATERAL (  -- the first event not yet taken from the outbox
    SELECT t.recorded_at FROM tracker.transitions t
    WHERE t.pos > coalesce(c.acked_pos, 0) ORDER BY t.pos LIMIT 1
) n ON true;
