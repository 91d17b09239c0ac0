-- tracker.delivery_summary and tracker.delivery_latency on the rollup, so that they keep their
-- history when retention removes final messages (DESIGN.md § views, § 9).
--
-- Since 003 both were aggregates over tracker.messages. Once retention's `final_messages` kind
-- (sql/009, docs/retention.md) removed a day's old messages, the day showed only the messages
-- retention held back (a day of 8 delivered and 2 failed read 1 total, 0 delivered, ratio 0
-- after retention, while delivery_by_route still read 10|8|2|0.8), and its latency row was gone.
-- They also read every message of every day at each look.
--
-- Now they read what delivery_by_route reads (sql/009, section 3; docs/views.md): the folded
-- per-day rollup tracker.route_days, keyed by day, plus the deltas not folded yet
-- (tracker.route_deltas_by_hour), grouped by vendor and UTC day of submission. Deleting a
-- message adds no delta, so a day's figures outlive its messages; and the unfolded deltas make
-- them exact whenever the fold last ran.
--
-- Same names, column order and types as in 003 (applications read them): counts are bigint
-- (sums of the rollup's bigints, cast back), delivered_ratio numeric rounded to 4 places, the
-- quantiles double precision. Counts and delivered_ratio are exact, as before. The quantiles
-- now come from the rollup's latency histogram (tracker.hist_quantile, as delivery_by_route's
-- p50_s/p90_s): each lies within the latency bucket that holds the nearest-rank percentile
-- (percentile_disc), i.e. within a bucket's width (a factor 2^(1/8), about 9%; 0..1 s below one
-- second) where 003's percentile_cont interpolated between two neighbouring latencies.
-- `delivered` in delivery_latency is, as before, the number of messages with a delivery time
-- (the histogram's total); a day with none has no row, as before.

-- The number of latencies a histogram holds (sql/009: element b+1 counts bucket b).
CREATE FUNCTION tracker.hist_count(h bigint[]) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(greatest(x, 0)), 0)::bigint FROM unnest(h) AS x
$$;

-- Per vendor and day (UTC, of submission): messages per state, and the delivered ratio
-- (delivered or read, of every message submitted that day, in flight included).
CREATE OR REPLACE VIEW tracker.delivery_summary AS
SELECT r.vendor, r.day,
       sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected + r.failed
           + r.delivered + r.read)::bigint AS total,
       sum(r.submitted)::bigint AS submitted,
       sum(r.accepted)::bigint  AS accepted,
       sum(r.sent)::bigint      AS sent,
       sum(r.unknown)::bigint   AS unknown,
       sum(r.expired)::bigint   AS expired,
       sum(r.rejected)::bigint  AS rejected,
       sum(r.failed)::bigint    AS failed,
       sum(r.delivered)::bigint AS delivered,
       sum(r.read)::bigint      AS read,
       round(sum(r.delivered + r.read)::numeric
             / nullif(sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected
                          + r.failed + r.delivered + r.read), 0), 4) AS delivered_ratio
FROM (
    SELECT day, vendor, submitted, accepted, sent, unknown, expired, rejected, failed,
           delivered, read
    FROM tracker.route_days
    UNION ALL
    SELECT (hour AT TIME ZONE 'UTC')::date, vendor, submitted, accepted, sent, unknown, expired,
           rejected, failed, delivered, read
    FROM tracker.route_deltas_by_hour
) r
GROUP BY r.vendor, r.day
-- A vendor's day whose counts net to nothing has no row, as a day with no message had none.
HAVING sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected + r.failed
           + r.delivered + r.read) <> 0;

-- Per vendor and day (UTC, of submission): how many messages have a delivery time, and the
-- p50/p90/p99 of submit to delivered, in seconds, from the latency histogram (see above).
CREATE OR REPLACE VIEW tracker.delivery_latency AS
SELECT r.vendor, r.day,
       tracker.hist_count(tracker.hist_merge(r.latency)) AS delivered,
       tracker.hist_quantile(tracker.hist_merge(r.latency), 0.5)  AS p50_s,
       tracker.hist_quantile(tracker.hist_merge(r.latency), 0.9)  AS p90_s,
       tracker.hist_quantile(tracker.hist_merge(r.latency), 0.99) AS p99_s
FROM (
    SELECT day, vendor, latency FROM tracker.route_days
    UNION ALL
    SELECT (hour AT TIME ZONE 'UTC')::date, vendor, latency FROM tracker.route_deltas_by_hour
) r
GROUP BY r.vendor, r.day
HAVING tracker.hist_count(tracker.hist_merge(r.latency)) > 0;
