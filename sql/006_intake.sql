-- Intake at campaign scale (tracker.intake).

-- When the row reached the database (submitted_at is the sender's to set, and may be anything):
-- how long a row has waited, for /readyz and the intake backlog metrics.
ALTER TABLE tracker.submissions ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
