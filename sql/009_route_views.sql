-- Seeing what happens (issue #14): delivery by route, vendor comparison, figures for the status
-- page, and what retention needs. How and why: docs/views.md, docs/retention.md.

-- 1. The operator a vendor reports (Skycore postbacks: operator-name / operator-id) travels with
--    the report, so that a report stored before its message exists (an orphan) still names it
--    when it is adopted. The reducer copies it onto messages.operator (latest non-null wins).
ALTER TABLE tracker.observations ADD COLUMN operator text;

-- 2. Cheap per-vendor looks for the status page: messages in flight and stuck ones are found in
--    this partial index (only messages not final are in it), never by a scan of the table.
CREATE INDEX messages_in_flight ON tracker.messages (vendor, submitted_at) WHERE state < 'unknown';
-- Deleting a submission row makes PostgreSQL look for messages that still reference it (the
-- foreign key); without this index each such look would read the whole table (retention).
CREATE INDEX messages_submission ON tracker.messages (submission_id);

-- 3. Delivery figures kept as they happen (a rollup), so that the views read a few thousand rows
--    rather than millions of messages.
--
-- Every statement that inserts or updates messages adds what it changed to route_deltas (a
-- statement trigger: one grouped insert per statement, never a row lock on a shared counter, so
-- writers never wait for one another). A message counts once, in its current state, under its
-- route (vendor, country, operator) and the hour it was submitted; a change of state or operator
-- is -1 for what it was and +1 for what it is. A delivered message also counts once in a latency
-- bucket (submit to delivered). The periodic fold (tracker.rollup) moves the deltas into
-- route_days and vendor_hours and deletes them, in one transaction; it takes only committed
-- deltas, so nothing is counted twice or lost whatever the writers' commit order. The views add
-- the deltas not folded yet, so they are always exact, however late the fold runs.
-- Messages removed by retention stay counted: the figures keep their history.

-- Latency buckets: 0 is up to 1 s; bucket b >= 1 holds (2^((b-1)/8), 2^(b/8)] seconds (each
-- about 9% wider than the one before), up to 2^24 s (194 days) in bucket 192. Percentiles read
-- from them are interpolated within one bucket: off by less than a bucket's width (9%).
CREATE FUNCTION tracker.latency_bucket(submitted_at timestamptz, delivered_at timestamptz)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN delivered_at IS NULL THEN NULL
        WHEN extract(epoch FROM delivered_at - submitted_at) <= 1 THEN 0
        ELSE least(192, ceil(8 * log(2.0, extract(epoch FROM delivered_at - submitted_at))))::smallint
    END
$$;

CREATE FUNCTION tracker.bucket_lower_s(bucket int) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN bucket <= 0 THEN 0 ELSE power(2.0, (bucket - 1) / 8.0) END
$$;

CREATE FUNCTION tracker.bucket_upper_s(bucket int) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT power(2.0, bucket / 8.0)
$$;

-- A latency histogram is a bigint[]: element b+1 counts the messages of bucket b.
CREATE FUNCTION tracker.hist_put(h bigint[], bucket smallint, n bigint) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF bucket IS NULL OR n IS NULL THEN
        RETURN h;
    END IF;
    IF cardinality(h) < bucket + 1 THEN
        h := h || array_fill(0::bigint, ARRAY[bucket + 1 - cardinality(h)]);
    END IF;
    h[bucket + 1] := h[bucket + 1] + n;
    RETURN h;
END $$;

CREATE FUNCTION tracker.hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    i int;
BEGIN
    IF a IS NULL THEN
        RETURN b;
    ELSIF b IS NULL THEN
        RETURN a;
    END IF;
    IF cardinality(b) > cardinality(a) THEN
        SELECT b, a INTO a, b;  -- add the shorter into the longer
    END IF;
    FOR i IN 1 .. cardinality(b) LOOP
        a[i] := a[i] + b[i];
    END LOOP;
    RETURN a;
END $$;

-- latency_hist(bucket, n): the histogram of (bucket, count) rows (NULL buckets are left out).
CREATE AGGREGATE tracker.latency_hist(smallint, bigint) (
    SFUNC = tracker.hist_put, STYPE = bigint[], INITCOND = '{}'
);
-- hist_merge(histogram): the sum of histograms.
CREATE AGGREGATE tracker.hist_merge(bigint[]) (SFUNC = tracker.hist_add, STYPE = bigint[]);

-- The q-quantile (0..1) of a histogram in seconds, interpolated within its bucket; NULL when empty.
CREATE FUNCTION tracker.hist_quantile(h bigint[], q float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total  bigint := 0;
    before bigint := 0;
    target float8;
    i      int;
BEGIN
    IF h IS NULL THEN
        RETURN NULL;
    END IF;
    FOR i IN 1 .. cardinality(h) LOOP
        total := total + greatest(h[i], 0);
    END LOOP;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    target := q * total;
    FOR i IN 1 .. cardinality(h) LOOP
        IF h[i] > 0 AND before + h[i] >= target THEN
            RETURN round((tracker.bucket_lower_s(i - 1)
                          + (tracker.bucket_upper_s(i - 1) - tracker.bucket_lower_s(i - 1))
                            * greatest(target - before, 0) / h[i])::numeric, 3)::float8;
        END IF;
        before := before + greatest(h[i], 0);
    END LOOP;
    RETURN tracker.bucket_upper_s(cardinality(h) - 1);
END $$;

-- What the triggers add, not folded yet: one row per (hour, route, state) or (hour, route,
-- latency bucket). `state` is set on a count of messages in that state; `bucket` on a count of
-- deliveries with that latency. No index: the fold reads and deletes it whole, and it stays small.
CREATE TABLE tracker.route_deltas (
    hour     timestamptz NOT NULL,  -- the hour (UTC) the messages were submitted
    vendor   text NOT NULL,
    country  text NOT NULL,          -- '' where unknown
    operator text NOT NULL,          -- '' where unknown
    state    tracker.state,
    bucket   smallint,
    n        bigint NOT NULL
);

-- Folded figures. Per day (UTC) and route, for delivery_by_route and vendor_comparison ...
CREATE TABLE tracker.route_days (
    day       date NOT NULL,
    vendor    text NOT NULL,
    country   text NOT NULL,
    operator  text NOT NULL,
    submitted bigint NOT NULL DEFAULT 0,
    accepted  bigint NOT NULL DEFAULT 0,
    sent      bigint NOT NULL DEFAULT 0,
    unknown   bigint NOT NULL DEFAULT 0,
    expired   bigint NOT NULL DEFAULT 0,
    rejected  bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    read      bigint NOT NULL DEFAULT 0,
    latency   bigint[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (day, vendor, country, operator)
);
-- ... and per hour and vendor, for the status page and its charts.
CREATE TABLE tracker.vendor_hours (
    hour      timestamptz NOT NULL,
    vendor    text NOT NULL,
    submitted bigint NOT NULL DEFAULT 0,
    accepted  bigint NOT NULL DEFAULT 0,
    sent      bigint NOT NULL DEFAULT 0,
    unknown   bigint NOT NULL DEFAULT 0,
    expired   bigint NOT NULL DEFAULT 0,
    rejected  bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    read      bigint NOT NULL DEFAULT 0,
    latency   bigint[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (hour, vendor)
);

-- The deltas not folded yet, shaped as rollup rows (per hour and route).
CREATE VIEW tracker.route_deltas_by_hour AS
SELECT hour, vendor, country, operator,
       coalesce(sum(n) FILTER (WHERE state = 'submitted'), 0) AS submitted,
       coalesce(sum(n) FILTER (WHERE state = 'accepted'), 0)  AS accepted,
       coalesce(sum(n) FILTER (WHERE state = 'sent'), 0)      AS sent,
       coalesce(sum(n) FILTER (WHERE state = 'unknown'), 0)   AS unknown,
       coalesce(sum(n) FILTER (WHERE state = 'expired'), 0)   AS expired,
       coalesce(sum(n) FILTER (WHERE state = 'rejected'), 0)  AS rejected,
       coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)    AS failed,
       coalesce(sum(n) FILTER (WHERE state = 'delivered'), 0) AS delivered,
       coalesce(sum(n) FILTER (WHERE state = 'read'), 0)      AS read,
       tracker.latency_hist(bucket, n) AS latency
FROM tracker.route_deltas
GROUP BY hour, vendor, country, operator;

-- What a set of message rows counts for, +1 each (or -1 each: `sign`), grouped.
CREATE FUNCTION tracker.count_messages_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tracker.route_deltas (hour, vendor, country, operator, state, bucket, n)
        SELECT date_trunc('hour', m.submitted_at, 'UTC'), m.vendor, coalesce(m.country, ''),
               coalesce(m.operator, ''), c.state, c.bucket, count(*)
        FROM new_rows m
        CROSS JOIN LATERAL (VALUES (m.state, NULL::smallint),
                                   (NULL::tracker.state, tracker.latency_bucket(m.submitted_at, m.delivered_at)))
                           AS c(state, bucket)
        WHERE c.state IS NOT NULL OR c.bucket IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6;
    ELSE
        -- Only rows whose counted facts changed: a claim, a poll's release or a report that
        -- changes no state adds nothing.
        INSERT INTO tracker.route_deltas (hour, vendor, country, operator, state, bucket, n)
        SELECT date_trunc('hour', m.submitted_at, 'UTC'), m.vendor, coalesce(m.country, ''),
               coalesce(m.operator, ''), c.state, c.bucket, sum(m.sign)
        FROM (
            SELECT o.submitted_at, o.vendor, o.country, o.operator, o.state, o.delivered_at,
                   -1 AS sign, o.id
            FROM old_rows o
            UNION ALL
            SELECT n.submitted_at, n.vendor, n.country, n.operator, n.state, n.delivered_at,
                   1, n.id
            FROM new_rows n
        ) m
        JOIN (
            SELECT o.id FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE (o.state, o.operator, o.delivered_at, o.country, o.vendor, o.submitted_at)
                  IS DISTINCT FROM (n.state, n.operator, n.delivered_at, n.country, n.vendor, n.submitted_at)
        ) changed ON changed.id = m.id
        CROSS JOIN LATERAL (VALUES (m.state, NULL::smallint),
                                   (NULL::tracker.state, tracker.latency_bucket(m.submitted_at, m.delivered_at)))
                           AS c(state, bucket)
        WHERE c.state IS NOT NULL OR c.bucket IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6
        HAVING sum(m.sign) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_count_inserts AFTER INSERT ON tracker.messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracker.count_messages_trigger();
CREATE TRIGGER messages_count_updates AFTER UPDATE ON tracker.messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracker.count_messages_trigger();

-- Fold the committed deltas into the rollups and delete them, in one statement (so in one
-- transaction). Returns how many delta rows were folded.
CREATE FUNCTION tracker.fold_route_deltas() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint;
BEGIN
    WITH d AS (
        DELETE FROM tracker.route_deltas RETURNING *
    ), by_hour AS (
        SELECT hour, vendor, country, operator,
               coalesce(sum(n) FILTER (WHERE state = 'submitted'), 0) AS submitted,
               coalesce(sum(n) FILTER (WHERE state = 'accepted'), 0)  AS accepted,
               coalesce(sum(n) FILTER (WHERE state = 'sent'), 0)      AS sent,
               coalesce(sum(n) FILTER (WHERE state = 'unknown'), 0)   AS unknown,
               coalesce(sum(n) FILTER (WHERE state = 'expired'), 0)   AS expired,
               coalesce(sum(n) FILTER (WHERE state = 'rejected'), 0)  AS rejected,
               coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)    AS failed,
               coalesce(sum(n) FILTER (WHERE state = 'delivered'), 0) AS delivered,
               coalesce(sum(n) FILTER (WHERE state = 'read'), 0)      AS read,
               tracker.latency_hist(bucket, n) AS latency
        FROM d GROUP BY hour, vendor, country, operator
    ), days AS (
        INSERT INTO tracker.route_days AS r
        SELECT (hour AT TIME ZONE 'UTC')::date, vendor, country, operator,
               sum(submitted), sum(accepted), sum(sent), sum(unknown), sum(expired),
               sum(rejected), sum(failed), sum(delivered), sum(read), tracker.hist_merge(latency)
        FROM by_hour GROUP BY 1, 2, 3, 4
        ON CONFLICT (day, vendor, country, operator) DO UPDATE SET
            submitted = r.submitted + excluded.submitted, accepted = r.accepted + excluded.accepted,
            sent = r.sent + excluded.sent, unknown = r.unknown + excluded.unknown,
            expired = r.expired + excluded.expired, rejected = r.rejected + excluded.rejected,
            failed = r.failed + excluded.failed, delivered = r.delivered + excluded.delivered,
            read = r.read + excluded.read, latency = tracker.hist_add(r.latency, excluded.latency)
    ), hours AS (
        INSERT INTO tracker.vendor_hours AS v
        SELECT hour, vendor,
               sum(submitted), sum(accepted), sum(sent), sum(unknown), sum(expired),
               sum(rejected), sum(failed), sum(delivered), sum(read), tracker.hist_merge(latency)
        FROM by_hour GROUP BY 1, 2
        ON CONFLICT (hour, vendor) DO UPDATE SET
            submitted = v.submitted + excluded.submitted, accepted = v.accepted + excluded.accepted,
            sent = v.sent + excluded.sent, unknown = v.unknown + excluded.unknown,
            expired = v.expired + excluded.expired, rejected = v.rejected + excluded.rejected,
            failed = v.failed + excluded.failed, delivered = v.delivered + excluded.delivered,
            read = v.read + excluded.read, latency = tracker.hist_add(v.latency, excluded.latency)
    )
    SELECT count(*) INTO folded FROM d;
    RETURN folded;
END $$;

-- Messages already there when this migration runs: counted once, as deltas (writers wait for
-- this transaction: CREATE TRIGGER above locks them out until it commits).
INSERT INTO tracker.route_deltas (hour, vendor, country, operator, state, bucket, n)
SELECT date_trunc('hour', m.submitted_at, 'UTC'), m.vendor, coalesce(m.country, ''),
       coalesce(m.operator, ''), c.state, c.bucket, count(*)
FROM tracker.messages m
CROSS JOIN LATERAL (VALUES (m.state, NULL::smallint),
                           (NULL::tracker.state, tracker.latency_bucket(m.submitted_at, m.delivered_at)))
                   AS c(state, bucket)
WHERE c.state IS NOT NULL OR c.bucket IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6;
SELECT tracker.fold_route_deltas();

-- 4. The views.

-- Per vendor, destination country, operator (NULL where no vendor reported one) and day (UTC of
-- submission): counts per state, delivered ratio, p50/p90 submit-to-delivered latency (from the
-- latency buckets: within 9%). A filter on day (or vendor, country) is applied before grouping.
CREATE VIEW tracker.delivery_by_route AS
SELECT r.day, r.vendor, nullif(r.country, '') AS country, nullif(r.operator, '') AS operator,
       sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected + r.failed
           + r.delivered + r.read) AS total,
       sum(r.submitted) AS submitted, sum(r.accepted) AS accepted, sum(r.sent) AS sent,
       sum(r.unknown) AS unknown, sum(r.expired) AS expired, sum(r.rejected) AS rejected,
       sum(r.failed) AS failed, sum(r.delivered) AS delivered, sum(r.read) AS read,
       sum(r.submitted + r.accepted + r.sent) AS in_flight,
       round(sum(r.delivered + r.read)::numeric
             / nullif(sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected
                          + r.failed + r.delivered + r.read), 0), 4) AS delivered_ratio,
       tracker.hist_quantile(tracker.hist_merge(r.latency), 0.5) AS p50_s,
       tracker.hist_quantile(tracker.hist_merge(r.latency), 0.9) AS p90_s
FROM (
    SELECT day, vendor, country, operator, submitted, accepted, sent, unknown, expired, rejected,
           failed, delivered, read, latency
    FROM tracker.route_days
    UNION ALL
    SELECT (hour AT TIME ZONE 'UTC')::date, vendor, country, operator, submitted, accepted, sent,
           unknown, expired, rejected, failed, delivered, read, latency
    FROM tracker.route_deltas_by_hour
) r
GROUP BY r.day, r.vendor, r.country, r.operator
-- A route whose messages all moved to another (an operator reported later) has nothing left.
HAVING sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected + r.failed
           + r.delivered + r.read) <> 0;

-- Per country, each vendor side by side over the days since `since` (UTC): volume, its share
-- of the country's volume, delivered ratio, median latency, and the vendor's rank in the
-- country by delivered ratio (1 = best).
CREATE FUNCTION tracker.vendor_comparison_since(since date)
RETURNS TABLE (country text, vendor text, messages numeric, share numeric, delivered numeric,
               in_flight numeric, delivered_ratio numeric, p50_s float8, p90_s float8,
               rank_in_country bigint, best_ratio_in_country numeric)
LANGUAGE sql STABLE AS $$
    WITH v AS (
        SELECT nullif(r.country, '') AS country, r.vendor,
               sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected
                   + r.failed + r.delivered + r.read) AS messages,
               sum(r.delivered + r.read) AS delivered,
               sum(r.submitted + r.accepted + r.sent) AS in_flight,
               tracker.hist_merge(r.latency) AS latency
        FROM (
            SELECT country, vendor, submitted, accepted, sent, unknown, expired, rejected, failed,
                   delivered, read, latency
            FROM tracker.route_days WHERE day >= since
            UNION ALL
            SELECT country, vendor, submitted, accepted, sent, unknown, expired, rejected, failed,
                   delivered, read, latency
            FROM tracker.route_deltas_by_hour WHERE hour >= since::timestamp AT TIME ZONE 'UTC'
        ) r
        GROUP BY 1, 2
    ), figures AS (
        SELECT v.country, v.vendor, v.messages, v.delivered, v.in_flight,
               round(v.messages / nullif(sum(v.messages) OVER (PARTITION BY v.country), 0), 4) AS share,
               round(v.delivered / nullif(v.messages, 0), 4) AS delivered_ratio,
               tracker.hist_quantile(v.latency, 0.5) AS p50_s,
               tracker.hist_quantile(v.latency, 0.9) AS p90_s
        FROM v WHERE v.messages <> 0
    )
    SELECT f.country, f.vendor, f.messages, f.share, f.delivered, f.in_flight, f.delivered_ratio,
           f.p50_s, f.p90_s,
           rank() OVER (PARTITION BY f.country ORDER BY f.delivered_ratio DESC NULLS LAST),
           max(f.delivered_ratio) OVER (PARTITION BY f.country)
    FROM figures f
    ORDER BY f.country NULLS LAST, f.delivered_ratio DESC NULLS LAST, f.vendor
$$;

-- The last 7 days (today, UTC, and the 6 before).
CREATE VIEW tracker.vendor_comparison AS
SELECT * FROM tracker.vendor_comparison_since((now() AT TIME ZONE 'UTC')::date - 6);

-- Per hour (UTC, of submission) and vendor: what the status page charts.
CREATE VIEW tracker.vendor_hourly AS
SELECT r.hour, r.vendor,
       sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected + r.failed
           + r.delivered + r.read) AS total,
       sum(r.delivered + r.read) AS delivered,
       sum(r.submitted + r.accepted + r.sent) AS in_flight,
       sum(r.rejected + r.failed + r.expired + r.unknown) AS not_delivered,
       round(sum(r.delivered + r.read)::numeric
             / nullif(sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected
                          + r.failed + r.delivered + r.read), 0), 4) AS delivered_ratio,
       tracker.hist_quantile(tracker.hist_merge(r.latency), 0.5) AS p50_s,
       tracker.hist_quantile(tracker.hist_merge(r.latency), 0.9) AS p90_s
FROM (
    SELECT hour, vendor, submitted, accepted, sent, unknown, expired, rejected, failed,
           delivered, read, latency
    FROM tracker.vendor_hours
    UNION ALL
    SELECT hour, vendor, submitted, accepted, sent, unknown, expired, rejected, failed,
           delivered, read, latency
    FROM tracker.route_deltas_by_hour
) r
GROUP BY r.hour, r.vendor;

-- Per vendor, messages submitted since `since`: the status page's "last hour" and "last day".
CREATE FUNCTION tracker.vendor_figures_since(since timestamptz)
RETURNS TABLE (vendor text, total numeric, delivered numeric, in_flight numeric,
               delivered_ratio numeric, p50_s float8, p90_s float8)
LANGUAGE sql STABLE AS $$
    SELECT r.vendor,
           sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired + r.rejected + r.failed
               + r.delivered + r.read),
           sum(r.delivered + r.read),
           sum(r.submitted + r.accepted + r.sent),
           round(sum(r.delivered + r.read)::numeric
                 / nullif(sum(r.submitted + r.accepted + r.sent + r.unknown + r.expired
                              + r.rejected + r.failed + r.delivered + r.read), 0), 4),
           tracker.hist_quantile(tracker.hist_merge(r.latency), 0.5),
           tracker.hist_quantile(tracker.hist_merge(r.latency), 0.9)
    FROM (
        SELECT vendor, submitted, accepted, sent, unknown, expired, rejected, failed, delivered,
               read, latency
        FROM tracker.vendor_hours WHERE hour >= date_trunc('hour', since, 'UTC')
        UNION ALL
        SELECT vendor, submitted, accepted, sent, unknown, expired, rejected, failed, delivered,
               read, latency
        FROM tracker.route_deltas_by_hour WHERE hour >= date_trunc('hour', since, 'UTC')
    ) r
    GROUP BY r.vendor
$$;

-- 5. Retention (tracker.retention, docs/retention.md): what each run removed, and when.
CREATE TABLE tracker.retention_runs (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,         -- observations, postbacks, orphans, transitions, ...
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    cutoff      timestamptz NOT NULL,  -- rows older than this were eligible
    removed     bigint NOT NULL,       -- rows of the kind removed
    also        jsonb,                 -- rows removed with them (a message's observations, ...)
    batches     integer NOT NULL,
    error       text                   -- why the run of this kind stopped early
);
CREATE INDEX retention_runs_kind ON tracker.retention_runs (kind, id);

CREATE VIEW tracker.retention_status AS
SELECT r.kind, r.started_at, r.finished_at, r.cutoff AS removed_older_than, r.removed, r.also,
       r.batches, r.error
FROM tracker.retention_runs r
ORDER BY r.id DESC;

-- The delivery position up to which every known reader of the outbox has acknowledged events:
-- each consumer (tracker.consumers), and each configured sink (issue #13: a sink's cursor is its
-- consumers row; a sink that has none yet starts from the beginning, so it holds everything).
-- Looked up when called, so it holds whichever migration added the sinks. No reader at all:
-- everything published. Retention never removes an event past this position.
CREATE FUNCTION tracker.acknowledged_pos() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    horizon bigint;
    sinks   bigint;
BEGIN
    SELECT coalesce(min(c.acked_pos), (SELECT last_pos FROM tracker.event_publisher))
    INTO horizon FROM tracker.consumers c;
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'tracker' AND table_name = 'sinks' AND column_name = 'consumer') THEN
        EXECUTE 'SELECT min(coalesce(c.acked_pos, 0)) FROM tracker.sinks s
                 LEFT JOIN tracker.consumers c ON c.consumer = s.consumer' INTO sinks;
        horizon := least(horizon, sinks);  -- least() passes over NULL (no sinks)
    END IF;
    RETURN horizon;
END $$;

-- One batch of retention for one kind (tracker.retention calls these in short transactions).
-- Each examines up to `max_rows` rows after id `after`, in id order (ids grow with time), and
-- removes those of them that are older than `cutoff` and may go; rows another transaction holds
-- are passed over (SKIP LOCKED), never waited for. Returns the last id examined (the next
-- batch's `after`; NULL: nothing left), how many examined rows were older than the cutoff (0:
-- the walk has reached rows too young, so it stops), how many rows were removed, and what was
-- removed with them.
CREATE TYPE tracker.retention_batch AS (last_id bigint, old bigint, removed bigint, also jsonb);

-- Raw postbacks already applied (or set aside). Unprocessed ones are never removed.
CREATE FUNCTION tracker.retain_postbacks(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH examined AS MATERIALIZED (
        SELECT id, received_at < cutoff AS old FROM tracker.postbacks
        WHERE id > after ORDER BY id LIMIT max_rows
    ), doomed AS MATERIALIZED (
        SELECT p.id FROM tracker.postbacks p JOIN examined e ON e.id = p.id
        WHERE e.old AND p.processed_at IS NOT NULL
        FOR UPDATE OF p SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.postbacks p USING doomed d WHERE p.id = d.id RETURNING 1
    )
    SELECT (SELECT max(id) FROM examined), (SELECT count(*) FROM examined WHERE old),
           (SELECT count(*) FROM gone), NULL::jsonb
$$;

-- Reports (with their raw payloads) of final messages. Orphans are their own kind.
CREATE FUNCTION tracker.retain_observations(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH examined AS MATERIALIZED (
        SELECT id, received_at < cutoff AS old FROM tracker.observations
        WHERE id > after ORDER BY id LIMIT max_rows
    ), doomed AS MATERIALIZED (
        SELECT o.id FROM tracker.observations o
        JOIN examined e ON e.id = o.id
        JOIN tracker.messages m ON m.id = o.message_id
        WHERE e.old AND m.state >= 'unknown'
        FOR UPDATE OF o SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.observations o USING doomed d WHERE o.id = d.id RETURNING 1
    )
    SELECT (SELECT max(id) FROM examined), (SELECT count(*) FROM examined WHERE old),
           (SELECT count(*) FROM gone), NULL::jsonb
$$;

-- Reports that never found their message (found by their own partial index, oldest first).
CREATE FUNCTION tracker.retain_orphans(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH doomed AS MATERIALIZED (
        SELECT id FROM tracker.observations
        WHERE message_id IS NULL AND received_at < cutoff
        ORDER BY received_at LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.observations o USING doomed d
        WHERE o.id = d.id AND o.message_id IS NULL RETURNING 1
    )
    SELECT after, (SELECT count(*) FROM doomed), (SELECT count(*) FROM gone), NULL::jsonb
$$;

-- Events every consumer and sink has acknowledged (tracker.acknowledged_pos), of final messages.
CREATE FUNCTION tracker.retain_transitions(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH horizon AS MATERIALIZED (
        SELECT tracker.acknowledged_pos() AS pos
    ), examined AS MATERIALIZED (
        SELECT event_id AS id, recorded_at < cutoff AS old FROM tracker.transitions
        WHERE event_id > after ORDER BY event_id LIMIT max_rows
    ), doomed AS MATERIALIZED (
        SELECT t.event_id FROM tracker.transitions t
        JOIN examined e ON e.id = t.event_id
        JOIN tracker.messages m ON m.id = t.message_id
        WHERE e.old AND t.pos <= (SELECT pos FROM horizon) AND m.state >= 'unknown'
        FOR UPDATE OF t SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.transitions t USING doomed d WHERE t.event_id = d.event_id RETURNING 1
    )
    SELECT (SELECT max(id) FROM examined), (SELECT count(*) FROM examined WHERE old),
           (SELECT count(*) FROM gone), NULL::jsonb
$$;

-- Messages final since before the cutoff, whose every event has been acknowledged, with their
-- reports and events; then the submission rows left with no message. (The rollup keeps counting
-- them: sql/009, section 3.)
CREATE FUNCTION tracker.retain_final_messages(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH horizon AS MATERIALIZED (
        SELECT tracker.acknowledged_pos() AS pos
    ), examined AS MATERIALIZED (
        SELECT id, submitted_at < cutoff AS old FROM tracker.messages
        WHERE id > after ORDER BY id LIMIT max_rows
    ), doomed AS MATERIALIZED (
        SELECT m.id, m.submission_id FROM tracker.messages m
        JOIN examined e ON e.id = m.id
        WHERE e.old AND m.state >= 'unknown' AND m.updated_at < cutoff
          AND NOT EXISTS (SELECT 1 FROM tracker.transitions t
                          WHERE t.message_id = m.id
                            AND (t.pos IS NULL OR t.pos > (SELECT pos FROM horizon)))
        FOR UPDATE OF m SKIP LOCKED
    ), observations AS (
        DELETE FROM tracker.observations o USING doomed d WHERE o.message_id = d.id RETURNING 1
    ), transitions AS (
        DELETE FROM tracker.transitions t USING doomed d WHERE t.message_id = d.id RETURNING 1
    ), gone AS (
        DELETE FROM tracker.messages m USING doomed d WHERE m.id = d.id RETURNING 1
    ), submissions AS (
        DELETE FROM tracker.submissions s
        WHERE s.id IN (SELECT submission_id FROM doomed)
          AND s.processed_at < cutoff
          AND NOT EXISTS (SELECT 1 FROM tracker.messages m
                          WHERE m.submission_id = s.id AND m.id NOT IN (SELECT id FROM doomed))
        RETURNING 1
    )
    SELECT (SELECT max(id) FROM examined), (SELECT count(*) FROM examined WHERE old),
           (SELECT count(*) FROM gone),
           jsonb_build_object('observations', (SELECT count(*) FROM observations),
                              'transitions', (SELECT count(*) FROM transitions),
                              'submissions', (SELECT count(*) FROM submissions))
$$;

-- Submission rows refused (or that named no message), processed before the cutoff.
CREATE FUNCTION tracker.retain_refused_rows(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH examined AS MATERIALIZED (
        SELECT id, created_at < cutoff AS old FROM tracker.submissions
        WHERE id > after ORDER BY id LIMIT max_rows
    ), doomed AS MATERIALIZED (
        SELECT s.id FROM tracker.submissions s JOIN examined e ON e.id = s.id
        WHERE e.old AND s.processed_at < cutoff AND (s.error IS NOT NULL OR s.message_count = 0)
          AND NOT EXISTS (SELECT 1 FROM tracker.messages m WHERE m.submission_id = s.id)
        FOR UPDATE OF s SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.submissions s USING doomed d WHERE s.id = d.id RETURNING 1
    )
    SELECT (SELECT max(id) FROM examined), (SELECT count(*) FROM examined WHERE old),
           (SELECT count(*) FROM gone), NULL::jsonb
$$;
