-- The notifier's copy of each webhook, kept from webhook.changed (secrets sealed).
CREATE TABLE webhooks (
    id        uuid PRIMARY KEY,
    owner     text NOT NULL,
    scope     text NOT NULL CHECK (scope IN ('own', 'all')),
    url       text NOT NULL,
    topics    text[] NOT NULL,
    secrets   jsonb NOT NULL,
    active    boolean NOT NULL,
    deleted   boolean NOT NULL DEFAULT false,
    revision  integer NOT NULL
);
CREATE INDEX webhooks_active_owner ON webhooks (owner) WHERE active;
CREATE INDEX webhooks_active_all ON webhooks (scope) WHERE active AND scope = 'all';

-- One row per (webhook, event). Rows sharing an ordering key (the instance, or the owner for
-- events about no instance) go out one after another in id order: a row is attempted only once
-- every earlier row of its key is finished.
CREATE TABLE deliveries (
    id               bigserial PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    message_id       text NOT NULL,
    topic            text NOT NULL,
    ordering_key     text NOT NULL,
    body             text NOT NULL,  -- the CloudEvent exactly as signed and sent, every attempt
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'gave_up', 'dropped')),
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    leased_until     timestamptz,
    finished_at      timestamptz,
    UNIQUE (webhook_id, message_id)
);
-- The claim walks a webhook's due rows in time order (deliveries_due), keeps those first of their
-- key (deliveries_pending) and counts those in flight (deliveries_leased).
CREATE INDEX deliveries_pending ON deliveries (webhook_id, ordering_key, id) WHERE state = 'pending';
CREATE INDEX deliveries_due ON deliveries (webhook_id, next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX deliveries_leased ON deliveries (webhook_id)
    WHERE state = 'pending' AND leased_until IS NOT NULL;
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE state <> 'pending';
