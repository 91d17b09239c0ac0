-- A vendor's rate bucket (sql/012) refilled by the time since its last refill: when the
-- database's clock stepped back (NTP), that time was negative and the bucket went as far below
-- zero (a 10-minute step at 100/s: -60,000 tokens), so that no replica polled the vendor until
-- the clock had caught up, without a word. The time is now taken as at least 0, and a bucket
-- left below zero by the old function is raised to zero.
CREATE OR REPLACE FUNCTION tracker.take_rate_tokens(v text, want int, per_s float8, burst float8)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    have float8;
    got  int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO tracker.vendor_rate AS r (vendor, tokens, refilled_at)
    VALUES (v, burst, clock_timestamp())
    ON CONFLICT (vendor) DO NOTHING;
    SELECT least(burst, greatest(r.tokens, 0)
                        + per_s * greatest(extract(epoch FROM clock_timestamp() - r.refilled_at), 0))
      INTO have
      FROM tracker.vendor_rate r WHERE r.vendor = v FOR UPDATE;
    got := greatest(0, least(want, floor(have)))::int;
    UPDATE tracker.vendor_rate SET tokens = have - got, refilled_at = clock_timestamp()
    WHERE vendor = v;
    RETURN got;
END $$;
