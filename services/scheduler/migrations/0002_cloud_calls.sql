-- Calls the scheduler owes a cloud, recorded before they are made: a launch or an action.
-- A worker leases the oldest pending call of each instance, makes it outside any transaction,
-- and records the outcome; a call whose lease ran out (its replica died) is taken again, and
-- a launch taken again first looks for the node it may already have created (by its tag) on
-- every account it tried.
CREATE TABLE cloud_calls (
    id           bigserial PRIMARY KEY,
    instance_id  uuid NOT NULL,
    owner        text NOT NULL,
    action       text NOT NULL CHECK (action IN ('launch', 'stop', 'start', 'reboot', 'terminate')),
    request      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'done', 'failed', 'cancelled')),
    attempts     integer NOT NULL DEFAULT 0,
    tried        text[] NOT NULL DEFAULT '{}',
    not_before   timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cloud_calls_due ON cloud_calls (not_before, id) WHERE status = 'pending';
CREATE INDEX cloud_calls_instance ON cloud_calls (instance_id, id);
CREATE INDEX cloud_calls_finished ON cloud_calls (updated_at) WHERE status <> 'pending';

-- An account's load: Boreas instances launching or placed there, kept with each change so a
-- launch need not count them (and cannot pass the account's max_instances, even in a race).
ALTER TABLE accounts ADD COLUMN load integer NOT NULL DEFAULT 0;

-- 'launching': room reserved on the account, the call is being made; 'ended': terminated.
ALTER TABLE placements DROP CONSTRAINT placements_status_check;
ALTER TABLE placements ADD CONSTRAINT placements_status_check
    CHECK (status IN ('launching', 'placed', 'failed', 'cancelled', 'ended'));
DROP INDEX placements_account;
CREATE INDEX placements_account ON placements (account_id) WHERE status IN ('launching', 'placed');

UPDATE accounts a SET load = (SELECT count(*) FROM placements p
                              WHERE p.account_id = a.id AND p.status = 'placed');
