-- The rollup's update trigger (009) in time linear in the rows a statement updates.
--
-- It joined the statement's old and new rows on id to keep only the rows whose counted facts
-- changed. PostgreSQL estimates a transition table at one row and PL/pgSQL keeps the plan it
-- made, so the join was a nested loop: quadratic. A claim of 3,300 messages (list mode) spent
-- 8 s in the trigger, its write-back 6 s more; on a slower machine the poller fell behind
-- until messages reached the end of their window without a poll (issue #15 note, session 6).
--
-- No join is needed: every old row counts -1 and every new row +1 for the facts it has, so an
-- unchanged row cancels itself within its group, and HAVING drops the groups that net to zero.
-- Aggregates over both tables, linear whatever plan the estimates lead to.
CREATE OR REPLACE FUNCTION tracker.count_messages_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN  -- as in 009, unchanged (a function is replaced whole)
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
        -- Net the old rows (-1) against the new (+1) on the counted columns themselves: a
        -- claim, a poll's release or a report that changes no state nets to nothing here, at
        -- the cost of hashing its rows once; only what is left is bucketed and counted.
        INSERT INTO tracker.route_deltas (hour, vendor, country, operator, state, bucket, n)
        SELECT date_trunc('hour', g.submitted_at, 'UTC'), g.vendor, coalesce(g.country, ''),
               coalesce(g.operator, ''), c.state, c.bucket, sum(g.n)
        FROM (
            SELECT m.submitted_at, m.vendor, m.country, m.operator, m.state, m.delivered_at,
                   sum(m.sign) AS n
            FROM (
                SELECT o.submitted_at, o.vendor, o.country, o.operator, o.state, o.delivered_at,
                       -1 AS sign
                FROM old_rows o
                UNION ALL
                SELECT n.submitted_at, n.vendor, n.country, n.operator, n.state, n.delivered_at, 1
                FROM new_rows n
            ) m
            GROUP BY 1, 2, 3, 4, 5, 6
            HAVING sum(m.sign) <> 0
        ) g
        CROSS JOIN LATERAL (VALUES (g.state, NULL::smallint),
                                   (NULL::tracker.state, tracker.latency_bucket(g.submitted_at, g.delivered_at)))
                           AS c(state, bucket)
        WHERE c.state IS NOT NULL OR c.bucket IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6
        HAVING sum(g.n) <> 0;
    END IF;
    RETURN NULL;
END $$;
