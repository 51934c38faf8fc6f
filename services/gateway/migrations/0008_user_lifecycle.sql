-- Offboarding. A disabled user's tokens stop working at once; a deleted user's row stays as a
-- tombstone, so the name is never given to someone else (it still names their audit entries
-- and past instances).
ALTER TABLE users ADD COLUMN disabled_at timestamptz;
ALTER TABLE users ADD COLUMN deleted_at timestamptz;

-- How the poller's polls of each account go, as it last reported (for admins).
CREATE TABLE account_health (
    account_id            text PRIMARY KEY REFERENCES provider_accounts (id) ON DELETE CASCADE,
    last_poll_at          timestamptz,
    last_error            text,
    consecutive_failures  integer NOT NULL,
    reported_at           timestamptz NOT NULL  -- the report's time: an older one is ignored
);
