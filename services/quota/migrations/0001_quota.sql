-- Limits per user; NULL means unlimited. No row: no limits at all.
CREATE TABLE limits (
    owner       text PRIMARY KEY,
    instances   integer,
    cpus        integer,
    memory_mb   integer,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What each user holds now (reserved + active). Locked row by row when a launch is decided.
CREATE TABLE usage (
    owner      text PRIMARY KEY,
    instances  integer NOT NULL DEFAULT 0 CHECK (instances >= 0),
    cpus       integer NOT NULL DEFAULT 0 CHECK (cpus >= 0),
    memory_mb  integer NOT NULL DEFAULT 0 CHECK (memory_mb >= 0)
);

-- Every launch quota decided, and where it stands: the truth usage is reconciled against.
CREATE TABLE ledger (
    instance_id  uuid PRIMARY KEY,
    owner        text NOT NULL,
    cpus         integer NOT NULL,
    memory_mb    integer NOT NULL,
    status       text NOT NULL CHECK (status IN ('reserved', 'active', 'released', 'rejected')),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_holding ON ledger (owner) WHERE status IN ('reserved', 'active');
