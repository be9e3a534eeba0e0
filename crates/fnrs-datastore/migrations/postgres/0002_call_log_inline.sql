-- fnrs schema v2 (PostgreSQL): a call's log may start in its call row.
-- A log written in the same batch as its call record is stored here instead
-- of as a call_logs row; later appends (and logs of calls not yet recorded)
-- still go to call_logs. The log reads as this value followed by the
-- call_logs chunks in seq order; it goes with the call row (prune, cascades).
ALTER TABLE calls ADD COLUMN log BYTEA;
