-- Provider accounts: credentials only ever sealed (AES-256-GCM), never in clear.
CREATE TABLE provider_accounts (
    id           text PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    provider     text NOT NULL,
    config       jsonb NOT NULL DEFAULT '{}',
    credentials  jsonb NOT NULL,
    revision     integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Who may launch on which account; grantee '*' means every user.
CREATE TABLE account_grants (
    account_id  text NOT NULL REFERENCES provider_accounts (id) ON DELETE CASCADE,
    grantee     text NOT NULL,
    PRIMARY KEY (account_id, grantee)
);
CREATE INDEX account_grants_grantee ON account_grants (grantee);

-- The gateway's read model of instances: written at launch, then followed from events.
CREATE TABLE instances (
    id                    uuid PRIMARY KEY,
    owner                 text NOT NULL,
    name                  text NOT NULL,
    image                 text NOT NULL,
    cpus                  integer NOT NULL,
    memory_mb             integer NOT NULL,
    placement             jsonb NOT NULL DEFAULT '{}',
    state                 text NOT NULL,
    account_id            text,
    provider              text,
    provider_instance_id  text,
    region                text,
    reason                text,
    observed_at           timestamptz,
    idempotency_key       text,
    request_digest        text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX instances_listing ON instances (created_at DESC, id DESC);
CREATE INDEX instances_owner_listing ON instances (owner, created_at DESC, id DESC);

-- Who did what, append-only; never holds a secret.
CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE RULE audit_log_no_update AS ON UPDATE TO audit_log DO INSTEAD NOTHING;
CREATE RULE audit_log_no_delete AS ON DELETE TO audit_log DO INSTEAD NOTHING;
