-- The poller's copy of each provider account, and when it is next due for a poll.
CREATE TABLE accounts (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    provider      text NOT NULL,
    config        jsonb NOT NULL,
    credentials   jsonb NOT NULL,
    revision      integer NOT NULL,
    next_poll_at  timestamptz NOT NULL DEFAULT now(),
    failures      integer NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX accounts_due ON accounts (next_poll_at);

-- Instances Boreas placed, and the last state the poller saw them in.
CREATE TABLE instances (
    instance_id           uuid PRIMARY KEY,
    owner                 text NOT NULL,
    account_id            text NOT NULL,
    provider              text NOT NULL,
    provider_instance_id  text NOT NULL,
    cpus                  integer NOT NULL,
    memory_mb             integer NOT NULL,
    state                 text NOT NULL,
    observed_at           timestamptz
);
CREATE INDEX instances_account ON instances (account_id) WHERE state <> 'terminated';
CREATE UNIQUE INDEX instances_provider_id ON instances (account_id, provider_instance_id);

-- Nodes found on an account that Boreas did not create: reported once, never adopted.
CREATE TABLE unmanaged_nodes (
    account_id            text NOT NULL,
    provider_instance_id  text NOT NULL,
    first_seen            timestamptz NOT NULL,
    PRIMARY KEY (account_id, provider_instance_id)
);

-- Who polled which account when (kept for a day): for operators, and for tests of the leases.
CREATE TABLE polls (
    account_id  text NOT NULL,
    replica     text NOT NULL,
    at          timestamptz NOT NULL,
    ok          boolean NOT NULL
);
CREATE INDEX polls_at ON polls (at);
