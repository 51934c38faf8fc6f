-- The scheduler's copy of each provider account, from provider_account.changed (sealed creds).
CREATE TABLE accounts (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    provider     text NOT NULL,
    config       jsonb NOT NULL,
    grants       text[] NOT NULL,
    credentials  jsonb NOT NULL,
    revision     integer NOT NULL
);

-- What the scheduler did with each launch: where it is, or why it is not.
CREATE TABLE placements (
    instance_id           uuid PRIMARY KEY,
    owner                 text NOT NULL,
    status                text NOT NULL CHECK (status IN ('placed', 'failed', 'cancelled')),
    account_id            text,
    provider_instance_id  text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX placements_account ON placements (account_id) WHERE status = 'placed';
