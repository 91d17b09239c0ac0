-- tracker.vendor_health says since when a vendor's circuit is in the state it shows
-- (circuit_since), for the status page ("circuit open for 7.0 min") and anyone reading the view.
--
-- tracker.poll_stats has kept each replica's circuit_since since 005, but the view did not show
-- it: an operator could not tell a circuit that had just closed from one closed for a day. The
-- view shows the worst state among the replicas polling now (running, reported in the last two
-- minutes); circuit_since is the earliest circuit_since of those in that state (the vendor has
-- been in it at least that long), NULL where circuit_state is NULL.
--
-- 005's columns, in their order and with their types (CREATE OR REPLACE VIEW may only add
-- columns at the end), then circuit_since. The unmapped part is unchanged: a query that asks
-- none of its columns still leaves it out.
CREATE OR REPLACE VIEW tracker.vendor_health AS
WITH vendors AS (
    SELECT vendor FROM tracker.vendor_settings
    UNION
    SELECT vendor FROM tracker.poll_stats
), stats AS (
    SELECT vendor,
           sum(polls_ok) AS polls_ok,
           sum(polls_failed) AS polls_failed,
           max(last_success_at) AS last_success_at,
           max(last_error_at) AS last_error_at,
           (array_agg(last_error ORDER BY last_error_at DESC NULLS LAST))[1] AS last_error,
           max(CASE circuit_state WHEN 'open' THEN 2 WHEN 'half_open' THEN 1 ELSE 0 END)
               FILTER (WHERE stopped_at IS NULL AND updated_at > now() - interval '2 minutes')
               AS circuit_rank,
           count(*) FILTER (WHERE stopped_at IS NULL AND updated_at > now() - interval '2 minutes')
               AS polling_replicas,
           min(circuit_since) FILTER (WHERE stopped_at IS NULL AND circuit_state = 'open'
                                        AND updated_at > now() - interval '2 minutes') AS open_since,
           min(circuit_since) FILTER (WHERE stopped_at IS NULL AND circuit_state = 'half_open'
                                        AND updated_at > now() - interval '2 minutes')
               AS half_open_since,
           min(circuit_since) FILTER (WHERE stopped_at IS NULL AND circuit_state = 'closed'
                                        AND updated_at > now() - interval '2 minutes') AS closed_since
    FROM tracker.poll_stats
    GROUP BY vendor
), unmapped AS (
    SELECT vendor, count(*) AS unmapped_reports,
           (array_agg(DISTINCT code ORDER BY code))[1:20] AS unmapped_codes
    FROM tracker.observations
    WHERE state IS NULL
    GROUP BY vendor
)
SELECT v.vendor,
       coalesce(s.polls_ok, 0) AS poll_successes,
       coalesce(s.polls_failed, 0) AS poll_errors,
       s.last_success_at,
       s.last_error_at,
       s.last_error,
       CASE s.circuit_rank WHEN 2 THEN 'open' WHEN 1 THEN 'half_open' WHEN 0 THEN 'closed' END
           AS circuit_state,
       coalesce(s.polling_replicas, 0) AS polling_replicas,
       coalesce(u.unmapped_reports, 0) AS unmapped_reports,
       coalesce(u.unmapped_codes, '{}') AS unmapped_codes,
       CASE s.circuit_rank WHEN 2 THEN s.open_since WHEN 1 THEN s.half_open_since
                           WHEN 0 THEN s.closed_since END AS circuit_since
FROM vendors v
LEFT JOIN stats s ON s.vendor = v.vendor
LEFT JOIN unmapped u ON u.vendor = v.vendor;
