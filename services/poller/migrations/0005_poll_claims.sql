-- A claimed account stays claimed until its poll ends: a list call slower than the account's
-- interval no longer lets a second poll of it start (on this replica or another). A replica
-- that dies mid-poll leaves the claim to expire at polling_until.
ALTER TABLE accounts ADD COLUMN polling_until timestamptz;
