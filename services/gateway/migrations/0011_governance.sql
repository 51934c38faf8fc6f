-- Governance (issue 14): lease policies, the accounts' priced catalogs, approval rules, and what
-- the instance read model shows of them.

-- A user's lease policy; no row: no lease by default, no maximum, stop at expiry, warn 300 s before.
CREATE TABLE lease_policies (
    username         text PRIMARY KEY,
    default_seconds  integer,
    max_seconds      integer,
    on_expiry        text NOT NULL,
    warn_seconds     integer NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Each account's catalog as the scheduler last read it (provider_account.catalog_read): the
-- newest read wins. Launches are priced with it.
CREATE TABLE account_catalogs (
    account_id  text PRIMARY KEY,
    revision    integer NOT NULL,
    read_at     timestamptz NOT NULL,
    sizes       jsonb NOT NULL,
    regions     jsonb NOT NULL DEFAULT '[]'
);

-- Approval rules, in the order an admin gave them; names are unique.
CREATE TABLE approval_rules (
    position    integer PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    conditions  jsonb NOT NULL
);

-- expires_at: the lease's end (null: none); price_per_hour: the placed size's price;
-- approval_deadline: when an unanswered approval is denied.
ALTER TABLE instances
    ADD COLUMN expires_at         timestamptz,
    ADD COLUMN price_per_hour     double precision,
    ADD COLUMN approval_deadline  timestamptz;
CREATE INDEX instances_awaiting_approval ON instances (approval_deadline)
    WHERE state = 'awaiting_approval';
