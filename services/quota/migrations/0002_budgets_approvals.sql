-- Governance: budgets (cost_per_month), leases and approvals.

-- A budget per month (UTC), in the price unit of the account catalogs; NULL: none.
ALTER TABLE limits ADD COLUMN cost_per_month numeric CHECK (cost_per_month >= 0);

-- The cost this month last reported in quota.usage_changed, and when: the reconcile loop
-- reports again when it moved (a new month at least).
ALTER TABLE usage
    ADD COLUMN cost_reported numeric NOT NULL DEFAULT 0,
    ADD COLUMN cost_reported_at timestamptz;

ALTER TABLE ledger
    -- Per hour: the admission price until placed, then the placed one. NULL: not known.
    ADD COLUMN price_per_hour numeric CHECK (price_per_hour >= 0),
    -- The lease's end; NULL: no lease.
    ADD COLUMN expires_at timestamptz,
    -- Reserved, held until an admin approves or denies it; the launch kept for then.
    ADD COLUMN awaiting_approval boolean NOT NULL DEFAULT false,
    ADD COLUMN launch jsonb,
    -- The end of the entry's latest running spell ('infinity' while it runs; NULL: it never
    -- ran): an entry that no longer holds costs something this month only if it ran in it.
    ADD COLUMN spent_until timestamptz;
CREATE INDEX ledger_spent ON ledger (owner, spent_until) WHERE spent_until IS NOT NULL;

-- The times each instance quota decided ran, from instance.state_changed (running opens one,
-- any other state closes it). Keyed by their start: a redelivered change counts once.
CREATE TABLE spells (
    instance_id  uuid NOT NULL REFERENCES ledger (instance_id) ON DELETE CASCADE,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz CHECK (ended_at >= started_at),
    PRIMARY KEY (instance_id, started_at)
);
CREATE UNIQUE INDEX spells_open ON spells (instance_id) WHERE ended_at IS NULL;
-- The entries a budget counts: priced and holding, or priced and run this month.
CREATE INDEX ledger_priced ON ledger (owner)
    WHERE price_per_hour IS NOT NULL AND status IN ('reserved', 'active');
