-- Adaptive polling: an account is polled at its fast interval while something on it is changing
-- (an instance in transition, or one an action was asked for), else at its idle interval.
ALTER TABLE accounts ADD COLUMN last_poll_at timestamptz;
-- Until when an action on the instance is expected to show on the cloud.
ALTER TABLE instances ADD COLUMN expect_change_until timestamptz;
-- What makes an account busy, found without reading its settled instances.
CREATE INDEX instances_changing ON instances (account_id)
    WHERE state IN ('pending', 'rebooting', 'terminating') OR expect_change_until IS NOT NULL;
