-- Deployments (issue 15): the read model of each deployment, written at request and moved by
-- deployment.state_changed; its member instances carry which deployment and group they are of.

-- template: the template with its parameters substituted (each group's count as last asked);
-- failed: the members that failed; observed_at: of the newest state_changed applied.
CREATE TABLE deployments (
    id               uuid PRIMARY KEY,
    owner            text NOT NULL,
    name             text NOT NULL,
    template         jsonb NOT NULL,
    parameters       jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL,
    reason           text,
    failed           uuid[] NOT NULL DEFAULT '{}',
    observed_at      timestamptz,
    idempotency_key  text,
    request_digest   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX deployments_listing ON deployments (created_at DESC, id DESC);
CREATE INDEX deployments_owner_listing ON deployments (owner, created_at DESC, id DESC);

ALTER TABLE instances
    ADD COLUMN deployment_id  uuid,
    ADD COLUMN group_name     text;
CREATE INDEX instances_of_deployment ON instances (deployment_id, group_name)
    WHERE deployment_id IS NOT NULL;
