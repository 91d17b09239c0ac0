-- Vendor limits hold for the whole deployment, not per replica (issue #11).
--
-- Rate: one token bucket per vendor in the database. Each replica takes tokens in small chunks
-- (a tenth of a second's worth) and spends them locally; a chunk unspent after a second is
-- dropped, never returned, so that all replicas together stay within the rate plus one burst.
-- Concurrency: each replica runs its share, `concurrency` divided by the replicas polling the
-- vendor now (tracker.poll_stats rows refreshed in the last 15 s), rounded up.

CREATE TABLE tracker.vendor_rate (
    vendor      text PRIMARY KEY,
    tokens      float8 NOT NULL,
    refilled_at timestamptz NOT NULL
);

-- Take up to `want` tokens of `vendor`'s bucket (refilled at `per_s`, holding at most `burst`);
-- returns how many were given (0: none yet). Losing this update in a crash costs nothing, so
-- its commit does not wait for the disk.
CREATE FUNCTION tracker.take_rate_tokens(v text, want int, per_s float8, burst float8)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    have float8;
    got  int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO tracker.vendor_rate AS r (vendor, tokens, refilled_at)
    VALUES (v, burst, clock_timestamp())
    ON CONFLICT (vendor) DO NOTHING;
    SELECT least(burst, r.tokens + per_s * extract(epoch FROM clock_timestamp() - r.refilled_at))
      INTO have
      FROM tracker.vendor_rate r WHERE r.vendor = v FOR UPDATE;
    got := greatest(0, least(want, floor(have)))::int;
    UPDATE tracker.vendor_rate SET tokens = have - got, refilled_at = clock_timestamp()
    WHERE vendor = v;
    RETURN got;
END $$;
