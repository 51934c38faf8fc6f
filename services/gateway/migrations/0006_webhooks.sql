-- Webhooks users registered. Signing secrets are only ever sealed: `secrets` holds the current
-- one and, during a rotation, the previous one with the time it stops signing.
CREATE TABLE webhooks (
    id               uuid PRIMARY KEY,
    owner            text NOT NULL,
    scope            text NOT NULL CHECK (scope IN ('own', 'all')),
    url              text NOT NULL,
    topics           text[] NOT NULL,
    secrets          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    disabled_reason  text,
    revision         integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    deleted_at       timestamptz
);
CREATE INDEX webhooks_listing ON webhooks (owner, created_at DESC, id DESC) WHERE deleted_at IS NULL;

-- The delivery log, as the notifier reports it in webhook.delivery_attempted events.
CREATE TABLE webhook_attempts (
    report_id        text PRIMARY KEY,  -- the report's event id: a redelivered report stays one row
    webhook_id       uuid NOT NULL,
    message_id       text NOT NULL,
    message_topic    text NOT NULL,
    attempt          integer NOT NULL,
    outcome          text NOT NULL,
    status_code      integer,
    error            text,
    duration_ms      integer NOT NULL,
    attempted_at     timestamptz NOT NULL,
    next_attempt_at  timestamptz
);
CREATE INDEX webhook_attempts_log ON webhook_attempts (webhook_id, attempted_at DESC, report_id DESC);
CREATE INDEX webhook_attempts_age ON webhook_attempts (attempted_at);
