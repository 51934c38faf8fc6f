-- Each open event stream's lease names the token it was opened with (its SHA-256 digest, as in
-- tokens), so the hub's renewal finds the streams whose token is no longer valid and ends them.
-- Leases taken before have none: the processes holding them predate the check.
ALTER TABLE event_stream_leases ADD COLUMN token_digest bytea;
