-- Deployments (issue 15): the orchestrator's state. Every step is computed from the members'
-- states (services/scheduler/orchestration.py) with the deployment row locked FOR UPDATE, and
-- recorded in the transaction that publishes it: a member asked to launch is 'launching', one
-- asked to end 'terminating', so a step taken again (a redelivery, a restart) asks nothing twice.
CREATE TABLE deployments (
    id          uuid PRIMARY KEY,
    owner       text NOT NULL,
    name        text NOT NULL,
    -- The template as admitted (parameters substituted); NULL while only a deletion is known
    -- (deployment.delete_requested came before deployment.admitted).
    template    jsonb,
    state       text NOT NULL DEFAULT 'requested',
    deleting    boolean NOT NULL DEFAULT false,
    reason      text,
    failed      uuid[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deployment_members (
    instance_id    uuid PRIMARY KEY,
    deployment_id  uuid NOT NULL REFERENCES deployments (id),
    group_name     text NOT NULL,
    -- Order of admission within the group: scaling down removes the highest first.
    index          integer NOT NULL,
    launch         jsonb NOT NULL,  -- the DeploymentMember
    state          text NOT NULL DEFAULT 'waiting',
    failure        text,
    held           boolean NOT NULL DEFAULT false,
    removed        boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployment_members_deployment ON deployment_members (deployment_id);

-- Spread (anti-affinity): one claim per (deployment, group, account or region), taken in the
-- transaction that reserves room for a create and dropped when the create fails or the instance
-- terminates. The primary key makes two concurrent launches of one group unable to take the
-- same place.
CREATE TABLE spread_claims (
    deployment_id  uuid NOT NULL,
    group_name     text NOT NULL,
    place          text NOT NULL,  -- an account id (spread: accounts) or a region
    instance_id    uuid NOT NULL,
    PRIMARY KEY (deployment_id, group_name, place)
);
CREATE INDEX spread_claims_instance ON spread_claims (instance_id);
