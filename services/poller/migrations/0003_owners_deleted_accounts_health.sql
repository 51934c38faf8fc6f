-- A deleted account stays as a tombstone at its revision, so an older revision arriving late
-- cannot bring it back; it is never claimed for a poll.
ALTER TABLE accounts ADD COLUMN deleted boolean NOT NULL DEFAULT false;
DROP INDEX accounts_due;
CREATE INDEX accounts_due ON accounts (next_poll_at) WHERE NOT deleted;

-- When the account's health was last reported (provider_account.health_reported).
ALTER TABLE accounts ADD COLUMN health_reported_at timestamptz;

-- An instance given to another user before the poller followed it (instance.owner_changed
-- handled before instance.placed, which travels on another queue): following it takes the
-- owner from here, and removes the row.
CREATE TABLE owner_changes (
    instance_id  uuid PRIMARY KEY,
    owner        text NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
