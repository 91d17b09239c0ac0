-- Messages a replica took in while their vendor was disabled in its own configuration (the
-- sinks-only replica deploy/OPERATIONS.md suggested, or a vendor turned off for a while) were
-- given no first poll, and no replica ever polled them: they stayed in flight until their window
-- closed, `unknown`. Intake now decides by the vendor (tracker.intake.plan); this makes those
-- already taken in due now. A message of a vendor that polls is never in flight without a next
-- poll otherwise (the reducer keeps a NULL only where intake left one: push-only vendors, and
-- sends refused before an id, which are final). Bounded by the in-flight index; the poller's
-- rate limits spread the polls.
UPDATE tracker.messages SET next_poll_at = now()
WHERE state < 'unknown' AND next_poll_at IS NULL
  AND vendor IN ('sparksender', 'engagespark', 'sparrow', 'twilio');  -- the vendors that poll
