-- Each instance's lease (issue 14): written from instance.launch_admitted, moved by
-- instance.lease_extended, ended when the instance terminates or fails. The lease loop takes
-- rows whose due_at has come (FOR UPDATE SKIP LOCKED: one replica each), publishes
-- instance.lease_expiring at expires_at - warn_seconds and instance.lease_expired (with the
-- action) at expires_at, and moves due_at on, all in one transaction.
CREATE TABLE leases (
    instance_id    uuid PRIMARY KEY,
    owner          text NOT NULL,
    -- NULL only in a row ended before any lease was known.
    expires_at     timestamptz,
    -- NULL until the launch is admitted (an extension may come first, while it awaits approval).
    on_expiry      text CHECK (on_expiry IN ('stop', 'terminate')),
    warn_seconds   integer CHECK (warn_seconds >= 0),
    -- instance.lease_expiring was published for the current expires_at.
    warned         boolean NOT NULL DEFAULT false,
    -- When the loop next has something to do: the warning, then the expiry; NULL: nothing
    -- (expired, ended, or not admitted yet).
    due_at         timestamptz,
    -- The instance's last state seen (instance.state_changed): a stop at expiry is skipped for
    -- an instance already stopped.
    state          text,
    state_seen_at  timestamptz,
    -- The instance terminated or failed: kept a while so that a late event cannot bring it back.
    ended          boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leases_due ON leases (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX leases_ended ON leases (updated_at) WHERE ended;
