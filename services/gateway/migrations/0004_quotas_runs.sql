-- The gateway's view of each user's limits and usage, fed by quota.usage_changed.
CREATE TABLE quotas (
    owner       text PRIMARY KEY,
    limits      jsonb NOT NULL DEFAULT '{"instances": null, "cpus": null, "memory_mb": null}',
    usage       jsonb NOT NULL DEFAULT '{"instances": 0, "cpus": 0, "memory_mb": 0}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Running spells of instances, from instance.state_changed: the basis of chargeback.
CREATE TABLE runs (
    instance_id  uuid NOT NULL,
    owner        text NOT NULL,
    account_id   text NOT NULL,
    cpus         integer NOT NULL,
    memory_mb    integer NOT NULL,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    PRIMARY KEY (instance_id, started_at)
);
CREATE INDEX runs_period ON runs (started_at, ended_at);
